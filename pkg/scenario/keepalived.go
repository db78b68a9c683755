package scenario

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
)

type rawKeepalived struct {
	VRRP []rawVRRP `yaml:"vrrp,omitempty"`
}

type rawVRRP struct {
	Instance  string   `yaml:"instance,omitempty"`
	Interface string   `yaml:"interface,omitempty"`
	RouterID  int      `yaml:"virtual_router_id,omitempty"`
	State     string   `yaml:"state,omitempty"`
	Priority  int      `yaml:"priority,omitempty"`
	AdvertInt int      `yaml:"advert_int,omitempty"`
	NoPreempt bool     `yaml:"nopreempt,omitempty"`
	VIPs      []string `yaml:"virtual_ipaddress,omitempty"`
}

// parseKeepalived validates a node's keepalived section: each VRRP instance
// on one of the node's interfaces, with keepalived's ranges.
func parseKeepalived(t *topo.Topology, field, node string, rk *rawKeepalived, fail failFunc) (*lab.Keepalived, error) {
	k := &lab.Keepalived{}
	if len(rk.VRRP) == 0 {
		return nil, fail(field+".vrrp", "missing (at least one VRRP instance)")
	}
	for i, rv := range rk.VRRP {
		f := fmt.Sprintf("%s.vrrp[%d]", field, i)
		v := lab.VRRPInstance{Name: rv.Instance, Interface: rv.Interface, RouterID: rv.RouterID, State: rv.State,
			Priority: rv.Priority, AdvertInt: rv.AdvertInt, NoPreempt: rv.NoPreempt}
		if v.Name == "" {
			return nil, fail(f+".instance", "missing (the vrrp_instance's name, e.g. VI_1)")
		}
		for _, o := range k.VRRP {
			if o.Name == v.Name {
				return nil, fail(f+".instance", "%q is given twice", v.Name)
			}
		}
		if !slices.Contains(t.Interfaces(node), v.Interface) {
			return nil, fail(f+".interface", "%q is not an interface of %s (%v)", v.Interface, node, t.Interfaces(node))
		}
		if v.RouterID < 1 || v.RouterID > 255 {
			return nil, fail(f+".virtual_router_id", "%d is out of range (1..255)", v.RouterID)
		}
		if v.State == "" {
			v.State = "BACKUP"
		}
		if v.State != "MASTER" && v.State != "BACKUP" {
			return nil, fail(f+".state", "%q: give MASTER or BACKUP", v.State)
		}
		if v.Priority == 0 {
			v.Priority = 100
		}
		if v.Priority < 1 || v.Priority > 254 {
			return nil, fail(f+".priority", "%d is out of range (1..254; 255 is the address owner's)", v.Priority)
		}
		if v.AdvertInt == 0 {
			v.AdvertInt = 1
		}
		if v.AdvertInt < 1 || v.AdvertInt > 255 {
			return nil, fail(f+".advert_int", "%d is out of range (1..255 seconds, VRRP version 2)", v.AdvertInt)
		}
		if len(rv.VIPs) == 0 {
			return nil, fail(f+".virtual_ipaddress", "missing (the addresses the instance moves)")
		}
		for j, a := range rv.VIPs {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				addr, aerr := netip.ParseAddr(a)
				if aerr != nil {
					return nil, fail(fmt.Sprintf("%s.virtual_ipaddress[%d]", f, j), "%q is not an address (or address/prefix)", a)
				}
				p = netip.PrefixFrom(addr, addr.BitLen())
			}
			v.VIPs = append(v.VIPs, p)
		}
		k.VRRP = append(k.VRRP, v)
	}
	return k, nil
}
