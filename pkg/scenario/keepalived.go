package scenario

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/lvslab/lvslab/pkg/keepalived"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
)

type rawKeepalived struct {
	File  string          `yaml:"file,omitempty"` // a keepalived.conf, relative to the scenario
	VRRP  []rawVRRP       `yaml:"vrrp,omitempty"`
	Check *rawHealthCheck `yaml:"check,omitempty"`

	base string // the scenario's directory, for File
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
	SyncGroup string   `yaml:"sync_group,omitempty"`
}

// parseKeepalived validates a node's keepalived section: each VRRP instance
// on one of the node's interfaces, with keepalived's ranges.
func parseKeepalived(t *topo.Topology, field, node string, rk *rawKeepalived, fail failFunc) (*lab.Keepalived, error) {
	k := &lab.Keepalived{}
	if rk.File != "" {
		return nil, fail(field+".file", "internal: a file is read by keepalivedFile")
	}
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
			Priority: rv.Priority, AdvertInt: rv.AdvertInt, NoPreempt: rv.NoPreempt, SyncGroup: rv.SyncGroup}
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
	groups := map[string]int{}
	for _, v := range k.VRRP {
		if v.SyncGroup != "" {
			groups[v.SyncGroup]++
		}
	}
	for i, v := range k.VRRP {
		if n := groups[v.SyncGroup]; n == 1 {
			return nil, fail(fmt.Sprintf("%s.vrrp[%d].sync_group", field, i), "%q has only this instance (a sync group moves two or more together)", v.SyncGroup)
		}
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

// keepalivedFile reads a node's keepalived.conf: its VRRP instances, and its
// virtual servers as the node's IPVS services. When they carry health checks,
// keepalived's checkers hold the table, and lvslab needs one check for all the
// node's real servers (its scenarios have one per node).
func keepalivedFile(t *topo.Topology, field, node string, rk *rawKeepalived, fail failFunc) (*lab.Keepalived, []lab.Service, error) {
	f := field + ".file"
	if len(rk.VRRP) > 0 || rk.Check != nil {
		return nil, nil, fail(f, "give a keepalived.conf file, or vrrp and check, not both")
	}
	path := rk.File
	if !filepath.IsAbs(path) {
		path = filepath.Join(rk.base, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fail(f, "%v", err)
	}
	cfg, err := keepalived.Parse(path, data)
	if err != nil {
		return nil, nil, fail(f, "%v", err)
	}
	k := &lab.Keepalived{VRRP: cfg.VRRP}
	for _, v := range cfg.VRRP {
		if !slices.Contains(t.Interfaces(node), v.Interface) {
			return nil, nil, fail(f, "%s: vrrp_instance %s: interface %q is not an interface of %s (%v)", path, v.Name, v.Interface, node, t.Interfaces(node))
		}
	}
	var services []lab.Service
	for _, vs := range cfg.VirtualServers {
		services = append(services, vs.Service)
	}
	k.Check, err = commonCheck(cfg)
	if err != nil {
		return nil, nil, fail(f, "%s: %v", path, err)
	}
	if len(k.VRRP) == 0 && k.Check == nil && len(services) == 0 {
		return nil, nil, fail(f, "%s has no vrrp_instance and no virtual_server", path)
	}
	return k, services, nil
}

// commonCheck is the one health check of every real server of cfg, or nil
// when none has one.
func commonCheck(cfg *keepalived.Config) (*lab.HealthCheck, error) {
	var out *lab.HealthCheck
	secs := func(what string, d time.Duration) (int, error) {
		if d%time.Second != 0 {
			return 0, fmt.Errorf("%s %v: lvslab takes whole seconds", what, d)
		}
		return int(d / time.Second), nil
	}
	seen := 0
	total := 0
	for _, vs := range cfg.VirtualServers {
		for _, rs := range vs.RealServers {
			total++
			if rs.Check == nil {
				continue
			}
			seen++
			c := rs.Check
			if c.ConnectPort != 0 && c.ConnectPort != rs.Server.Addr.Port() {
				return nil, fmt.Errorf("real_server %s: connect_port %d: lvslab checks the real server's own port", rs.Server.Addr, c.ConnectPort)
			}
			h := lab.HealthCheck{Kind: lab.HealthCheckKind(c.Kind), Path: c.Path, StatusCode: c.StatusCode, Retry: c.Retry, InhibitOnFailure: rs.InhibitOnFailure}
			var err error
			if h.DelayLoop, err = secs("delay_loop", vs.DelayLoop); err == nil {
				if h.ConnectTimeout, err = secs("connect_timeout", c.ConnectTimeout); err == nil {
					h.DelayBeforeRetry, err = secs("delay_before_retry", c.DelayBeforeRetry)
				}
			}
			if err != nil {
				return nil, fmt.Errorf("virtual_server %s: %w", vs.Service.Key(), err)
			}
			if vs.SorryServer != nil {
				h.SorryServer = *vs.SorryServer
			}
			// keepalived's defaults where the file gives none.
			for _, d := range []struct {
				v   *int
				def int
			}{{&h.DelayLoop, 60}, {&h.ConnectTimeout, 5}, {&h.Retry, 1}, {&h.DelayBeforeRetry, 1}} {
				if *d.v == 0 {
					*d.v = d.def
				}
			}
			if h.Kind == lab.CheckHTTPGet && h.StatusCode == 0 {
				h.StatusCode = 200
			}
			if out == nil {
				out = &h
			} else if *out != h {
				return nil, fmt.Errorf("real_server %s of %s: its check differs from the first one's (lvslab takes one health check for all of a node's real servers)", rs.Server.Addr, vs.Service.Key())
			}
		}
	}
	if seen > 0 && seen < total {
		return nil, errors.New("some real servers have a health check and some have none (lvslab takes one for all of a node's real servers)")
	}
	return out, nil
}
