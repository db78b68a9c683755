package scenario

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
)

type rawKeepalived struct {
	VRRP  []rawVRRP       `yaml:"vrrp,omitempty"`
	Check *rawHealthCheck `yaml:"check,omitempty"`
}

type rawHealthCheck struct {
	Kind             string `yaml:"kind,omitempty"` // tcp or http
	Path             string `yaml:"path,omitempty"`
	StatusCode       int    `yaml:"status_code,omitempty"`
	DelayLoop        int    `yaml:"delay_loop,omitempty"`
	ConnectTimeout   int    `yaml:"connect_timeout,omitempty"`
	Retry            *int   `yaml:"retry,omitempty"`
	DelayBeforeRetry *int   `yaml:"delay_before_retry,omitempty"`
	InhibitOnFailure bool   `yaml:"inhibit_on_failure,omitempty"`
	SorryServer      string `yaml:"sorry_server,omitempty"`
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
	if len(rk.VRRP) == 0 && rk.Check == nil {
		return nil, fail(field, "give vrrp (VRRP instances), check (health checks of the node's IPVS services), or both")
	}
	if rc := rk.Check; rc != nil {
		c, err := parseHealthCheck(field+".check", rc, fail)
		if err != nil {
			return nil, err
		}
		k.Check = c
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

func parseHealthCheck(f string, rc *rawHealthCheck, fail failFunc) (*lab.HealthCheck, error) {
	c := &lab.HealthCheck{Path: rc.Path, StatusCode: rc.StatusCode, DelayLoop: rc.DelayLoop, ConnectTimeout: rc.ConnectTimeout,
		Retry: 1, DelayBeforeRetry: 1, InhibitOnFailure: rc.InhibitOnFailure}
	switch rc.Kind {
	case "tcp":
		c.Kind = lab.CheckTCP
		if rc.Path != "" || rc.StatusCode != 0 {
			return nil, fail(f+".path", "only for kind http")
		}
	case "http":
		c.Kind = lab.CheckHTTPGet
		if c.Path == "" {
			c.Path = "/"
		}
		if c.StatusCode == 0 {
			c.StatusCode = 200
		}
		if c.StatusCode < 100 || c.StatusCode > 599 {
			return nil, fail(f+".status_code", "%d is not an HTTP status", c.StatusCode)
		}
	default:
		return nil, fail(f+".kind", "%q: give tcp (TCP_CHECK) or http (HTTP_GET)", rc.Kind)
	}
	for _, v := range []struct {
		name string
		val  *int
		def  int
		min  int
	}{{"delay_loop", &c.DelayLoop, 6, 1}, {"connect_timeout", &c.ConnectTimeout, 5, 1}} {
		if *v.val == 0 {
			*v.val = v.def
		}
		if *v.val < v.min || *v.val > 3600 {
			return nil, fail(f+"."+v.name, "%d is out of range (%d..3600 seconds)", *v.val, v.min)
		}
	}
	if rc.Retry != nil {
		c.Retry = *rc.Retry
	}
	if rc.DelayBeforeRetry != nil {
		c.DelayBeforeRetry = *rc.DelayBeforeRetry
	}
	if c.Retry < 0 || c.Retry > 100 {
		return nil, fail(f+".retry", "%d is out of range (0..100)", c.Retry)
	}
	if c.DelayBeforeRetry < 0 || c.DelayBeforeRetry > 3600 {
		return nil, fail(f+".delay_before_retry", "%d is out of range (0..3600 seconds)", c.DelayBeforeRetry)
	}
	if rc.SorryServer != "" {
		ap, err := netip.ParseAddrPort(rc.SorryServer)
		if err != nil {
			return nil, fail(f+".sorry_server", "%q is not address:port", rc.SorryServer)
		}
		c.SorryServer = ap
	}
	return c, nil
}
