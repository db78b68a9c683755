package keepalived

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Parse reads a keepalived.conf; file names it in errors. Keywords lvslab
// reads:
//
//	global_defs { router_id }
//	vrrp_sync_group NAME { group { INSTANCE INSTANCE ... } }
//	vrrp_instance NAME { state interface virtual_router_id priority advert_int
//	    nopreempt virtual_ipaddress { ADDR[/LEN] [dev IFACE] ... } }
//	virtual_server IP PORT | fwmark N { delay_loop lb_algo (lvs_sched) lb_kind
//	    (lvs_method) protocol persistence_timeout persistence_granularity
//	    ip_family sorry_server sh-port sh-fallback mh-port mh-fallback
//	    real_server IP [PORT] { weight lvs_method inhibit_on_failure uthreshold
//	        lthreshold TCP_CHECK {...} HTTP_GET {...} } }
//
// with the checks' connect_port, connect_timeout, retry (or nb_get_retry),
// delay_before_retry and, in HTTP_GET, url { path status_code }. Any other
// keyword is an error, as is include. Values take keepalived's defaults:
// state BACKUP, priority 100, advert_int 1, lb_kind NAT, protocol TCP, weight
// 1; lb_algo defaults to the kernel's wlc.
func Parse(file string, data []byte) (*Config, error) {
	tree, err := parseTree(file, data)
	if err != nil {
		return nil, err
	}
	p := &parser{file: file}
	if err := p.noInclude(tree); err != nil {
		return nil, err
	}
	c := &Config{}
	var routerLine int
	type member struct {
		line  int
		group string
	}
	members := map[string]member{} // instance name: its sync group
	for _, s := range tree {
		switch s.key {
		case "vrrp_sync_group":
			ms, err := p.syncGroup(s)
			if err != nil {
				return nil, err
			}
			for _, m := range ms {
				if o, ok := members[m.key]; ok {
					return nil, p.errf(m.line, "vrrp_sync_group %s: %s is in vrrp_sync_group %s already (line %d)", s.args[0], m.key, o.group, o.line)
				}
				members[m.key] = member{m.line, s.args[0]}
			}

		case "global_defs":
			if err := p.shape(s, 0, true); err != nil {
				return nil, err
			}
			for _, g := range s.block {
				if g.key != "router_id" {
					return nil, p.unknown(g, "global_defs", "router_id")
				}
				if routerLine != 0 {
					return nil, p.errf(g.line, "router_id: given twice (first on line %d)", routerLine)
				}
				if c.RouterID, err = p.oneArg(g); err != nil {
					return nil, err
				}
				routerLine = g.line
			}
		case "vrrp_instance":
			v, err := p.vrrpInstance(s)
			if err != nil {
				return nil, err
			}
			for _, o := range c.VRRP {
				if o.Name == v.Name {
					return nil, p.errf(s.line, "vrrp_instance %q: given twice", v.Name)
				}
				if o.RouterID == v.RouterID && o.Interface == v.Interface {
					return nil, p.errf(s.line, "vrrp_instance %q: virtual_router_id %d on %s is %s's already", v.Name, v.RouterID, v.Interface, o.Name)
				}
			}
			c.VRRP = append(c.VRRP, v)
		case "virtual_server":
			vs, err := p.virtualServer(s)
			if err != nil {
				return nil, err
			}
			for _, o := range c.VirtualServers {
				if o.Service.Key() == vs.Service.Key() {
					return nil, p.errf(s.line, "virtual_server %s: given twice", vs.Service.Key())
				}
			}
			c.VirtualServers = append(c.VirtualServers, vs)
		default:
			return nil, p.unknown(s, "the top level", "global_defs", "vrrp_sync_group", "vrrp_instance", "virtual_server")
		}
	}
	for i := range c.VRRP {
		if m, ok := members[c.VRRP[i].Name]; ok {
			c.VRRP[i].SyncGroup = m.group
			delete(members, c.VRRP[i].Name)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		m := members[name]
		return nil, p.errf(m.line, "vrrp_sync_group %s: %s is not a vrrp_instance of the file", m.group, name)
	}
	return c, nil
}

// syncGroup reads "vrrp_sync_group NAME { group { VI_1 VI_2 ... } }" and
// returns its members.
func (p *parser) syncGroup(s *stmt) ([]*stmt, error) {
	if err := p.shape(s, 1, true); err != nil {
		return nil, err
	}
	where := "vrrp_sync_group " + s.args[0]
	var members []*stmt
	seen := once{}
	for _, k := range s.block {
		if err := seen.check(p, k); err != nil {
			return nil, err
		}
		if k.key != "group" {
			return nil, p.unknown(k, where, "group")
		}
		if err := p.shape(k, 0, true); err != nil {
			return nil, err
		}
		for _, m := range k.block {
			if m.hasBlock || len(m.args) > 0 {
				return nil, p.errf(m.line, "%s: %s: give one vrrp_instance name per line", where, m.key)
			}
			members = append(members, m)
		}
	}
	if len(members) < 2 {
		n := map[int]string{0: "no instance", 1: "one instance"}[len(members)]
		return nil, p.errf(s.line, "%s: its group names %s (a sync group moves two or more together)", where, n)
	}
	return members, nil
}

type parser struct {
	file string
}

func (p *parser) errf(line int, f string, a ...any) error {
	return &Error{File: p.file, Line: line, Err: fmt.Errorf(f, a...)}
}

// wrap names the keyword and its value before err.
func (p *parser) wrap(s *stmt, value string, err error) error {
	return &Error{File: p.file, Line: s.line, Err: fmt.Errorf("%s %q: %w", s.key, value, err)}
}

func (p *parser) noInclude(tree []*stmt) error {
	for _, s := range tree {
		if s.key == "include" {
			return p.errf(s.line, "include: not supported (lvslab reads one self-contained keepalived.conf)")
		}
		if err := p.noInclude(s.block); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) unknown(s *stmt, where string, known ...string) error {
	return p.errf(s.line, "%s: not a keyword lvslab reads in %s (it cannot model it; it reads %s)", s.key, where, strings.Join(known, ", "))
}

// shape checks the number of values and whether a block follows.
func (p *parser) shape(s *stmt, nargs int, block bool) error {
	if len(s.args) != nargs {
		if nargs == 0 {
			return p.errf(s.line, "%s: takes no value, got %q", s.key, strings.Join(s.args, " "))
		}
		return p.errf(s.line, "%s: takes %d value(s), got %d", s.key, nargs, len(s.args))
	}
	if s.hasBlock != block {
		if block {
			return p.errf(s.line, "%s: needs a { block }", s.key)
		}
		return p.errf(s.line, "%s: takes no { block }", s.key)
	}
	return nil
}

func (p *parser) oneArg(s *stmt) (string, error) {
	if err := p.shape(s, 1, false); err != nil {
		return "", err
	}
	return s.args[0], nil
}

// number reads the keyword's one value as an integer in [lo, hi].
func (p *parser) number(s *stmt, lo, hi uint64) (uint64, error) {
	v, err := p.oneArg(s)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, p.wrap(s, v, fmt.Errorf("not a number in %d..%d", lo, hi))
	}
	return n, nil
}

// seconds reads the keyword's one value as a positive number of seconds, with
// at most 6 decimals (keepalived's timers count microseconds).
func (p *parser) seconds(s *stmt) (time.Duration, error) {
	v, err := p.oneArg(s)
	if err != nil {
		return 0, err
	}
	d, err := parseSeconds(v)
	if err != nil {
		return 0, p.wrap(s, v, err)
	}
	return d, nil
}

func parseSeconds(v string) (time.Duration, error) {
	bad := errors.New("not a positive number of seconds (like 3 or 1.5, at most 6 decimals)")
	whole, frac, dot := strings.Cut(v, ".")
	w, err := strconv.ParseUint(whole, 10, 32)
	if err != nil || (dot && (frac == "" || len(frac) > 6)) {
		return 0, bad
	}
	d := time.Duration(w) * time.Second
	if dot {
		f, err := strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 32)
		if err != nil {
			return 0, bad
		}
		d += time.Duration(f) * time.Microsecond
	}
	if d <= 0 {
		return 0, bad
	}
	return d, nil
}

// once reports a keyword given twice in one block.
type once map[string]int

func (o once) check(p *parser, s *stmt) error {
	if first, ok := o[s.key]; ok {
		return p.errf(s.line, "%s: given twice (first on line %d)", s.key, first)
	}
	o[s.key] = s.line
	return nil
}

func (p *parser) vrrpInstance(s *stmt) (lab.VRRPInstance, error) {
	v := lab.VRRPInstance{State: "BACKUP", Priority: 100, AdvertInt: 1}
	if err := p.shape(s, 1, true); err != nil {
		return v, err
	}
	v.Name = s.args[0]
	where := "vrrp_instance " + v.Name
	seen := once{}
	type dev struct {
		line int
		name string
	}
	var devs []dev
	for _, k := range s.block {
		if err := seen.check(p, k); err != nil {
			return v, err
		}
		var err error
		switch k.key {
		case "state":
			var st string
			if st, err = p.oneArg(k); err == nil {
				if st != "MASTER" && st != "BACKUP" {
					err = p.wrap(k, st, errors.New("give MASTER or BACKUP"))
				}
				v.State = st
			}
		case "interface":
			v.Interface, err = p.oneArg(k)
		case "virtual_router_id":
			var n uint64
			n, err = p.number(k, 1, 255)
			v.RouterID = int(n)
		case "priority":
			var n uint64
			n, err = p.number(k, 1, 254) // 255 is the address owner's
			v.Priority = int(n)
		case "advert_int":
			var n uint64
			n, err = p.number(k, 1, 255) // whole seconds: VRRP version 2
			v.AdvertInt = int(n)
		case "nopreempt":
			err = p.shape(k, 0, false)
			v.NoPreempt = true
		case "virtual_ipaddress":
			if err = p.shape(k, 0, true); err != nil {
				return v, err
			}
			for _, a := range k.block {
				if a.hasBlock {
					return v, p.errf(a.line, "%s: an address takes no { block }", a.key)
				}
				pfx, err := netip.ParsePrefix(a.key)
				if err != nil {
					addr, aerr := netip.ParseAddr(a.key)
					if aerr != nil || addr.Zone() != "" {
						return v, p.errf(a.line, "virtual_ipaddress %q: not an address (or address/prefix)", a.key)
					}
					pfx = netip.PrefixFrom(addr, addr.BitLen())
				}
				switch {
				case len(a.args) == 0:
				case len(a.args) == 2 && a.args[0] == "dev":
					devs = append(devs, dev{a.line, a.args[1]})
				default:
					return v, p.errf(a.line, "virtual_ipaddress %s %s: lvslab reads only \"dev IFACE\" after an address", a.key, strings.Join(a.args, " "))
				}
				v.VIPs = append(v.VIPs, pfx)
			}
		default:
			return v, p.unknown(k, where, "state", "interface", "virtual_router_id", "priority", "advert_int", "nopreempt", "virtual_ipaddress")
		}
		if err != nil {
			return v, err
		}
	}
	for _, need := range []string{"interface", "virtual_router_id", "virtual_ipaddress"} {
		if _, ok := seen[need]; !ok {
			return v, p.errf(s.line, "%s: %s missing", where, need)
		}
	}
	if len(v.VIPs) == 0 {
		return v, p.errf(seen["virtual_ipaddress"], "%s: virtual_ipaddress lists no address", where)
	}
	for _, d := range devs {
		if d.name != v.Interface {
			return v, p.errf(d.line, "virtual_ipaddress dev %s: not the instance's interface %s (lvslab puts every address on the interface)", d.name, v.Interface)
		}
	}
	return v, nil
}

// addrPort reads "IP" or "IP PORT" (keepalived's two values); port 0 when
// only the address is given.
func (p *parser) addrPort(s *stmt, args []string) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(args[0])
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, p.wrap(s, args[0], errors.New("not an IP address"))
	}
	var port uint64
	if len(args) > 1 {
		port, err = strconv.ParseUint(args[1], 10, 16)
		if err != nil {
			return netip.AddrPort{}, p.wrap(s, args[0]+" "+args[1], fmt.Errorf("port %q is not in 0..65535", args[1]))
		}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port)), nil
}

var vsKeywords = []string{"delay_loop", "lb_algo", "lvs_sched", "lb_kind", "lvs_method", "protocol", "persistence_timeout",
	"persistence_granularity", "ip_family", "sorry_server", "sh-port", "sh-fallback", "mh-port", "mh-fallback", "real_server"}

func (p *parser) virtualServer(s *stmt) (VirtualServer, error) {
	var vs VirtualServer
	svc := &vs.Service
	if !s.hasBlock {
		return vs, p.errf(s.line, "virtual_server: needs a { block }")
	}
	switch {
	case len(s.args) == 2 && s.args[0] == "fwmark":
		m, err := strconv.ParseUint(s.args[1], 10, 32)
		if err != nil || m == 0 {
			return vs, p.errf(s.line, "virtual_server fwmark %q: not a firewall mark (1..4294967295)", s.args[1])
		}
		svc.FWMark = uint32(m)
	case len(s.args) >= 1 && s.args[0] == "group":
		return vs, p.errf(s.line, "virtual_server group: not supported (lvslab reads one service per virtual_server)")
	case len(s.args) == 1 || len(s.args) == 2:
		ap, err := p.addrPort(s, s.args)
		if err != nil {
			return vs, err
		}
		svc.Addr, svc.Protocol = ap, lab.TCP
	default:
		return vs, p.errf(s.line, "virtual_server: give IP PORT or fwmark N, got %q", strings.Join(s.args, " "))
	}
	where := "virtual_server " + strings.Join(s.args, " ")
	svc.Scheduler = lab.DefaultScheduler
	method := lab.NAT // keepalived's default: "no forwarding method set, setting default NAT"
	seen := once{}
	var granularity *stmt
	var family *stmt
	var flags []*stmt
	type rsLine struct {
		stmt   *stmt
		method lab.Method // "" to take the virtual server's
	}
	var rss []rsLine
	for _, k := range s.block {
		key := k.key
		switch key { // synonyms count as one keyword
		case "lvs_sched":
			key = "lb_algo"
		case "lvs_method":
			key = "lb_kind"
		}
		if key != "real_server" {
			if err := seen.check(p, &stmt{line: k.line, key: key}); err != nil {
				return vs, err
			}
		}
		var err error
		switch key {
		case "delay_loop":
			vs.DelayLoop, err = p.seconds(k)
		case "lb_algo":
			var v string
			if v, err = p.oneArg(k); err == nil {
				if svc.Scheduler, err = lab.ParseScheduler(v); err != nil {
					names := make([]string, 0, len(lab.Schedulers()))
					for _, sc := range lab.Schedulers() {
						names = append(names, string(sc))
					}
					err = p.wrap(k, v, fmt.Errorf("not a scheduler the kernel ships (%s)", strings.Join(names, ", ")))
				}
			}
		case "lb_kind":
			method, err = p.method(k)
		case "protocol":
			var v string
			if v, err = p.oneArg(k); err == nil {
				switch {
				case svc.FWMark != 0:
					err = p.wrap(k, v, errors.New("a firewall-mark service has no protocol in lvslab's model"))
				case v == "TCP" || v == "UDP":
					svc.Protocol = lab.Protocol(strings.ToLower(v))
				default:
					err = p.wrap(k, v, errors.New("give TCP or UDP"))
				}
			}
		case "persistence_timeout":
			var n uint64
			n, err = p.number(k, 0, math.MaxUint32)
			svc.Persistent, svc.Timeout = n > 0, uint32(n) // 0: no persistence
		case "persistence_granularity":
			_, err = p.oneArg(k)
			granularity = k
		case "ip_family":
			var v string
			if v, err = p.oneArg(k); err == nil && v != "inet" && v != "inet6" {
				err = p.wrap(k, v, errors.New("give inet or inet6"))
			}
			family = k
		case "sorry_server":
			if err = p.shape(k, 2, false); err == nil {
				var ap netip.AddrPort
				ap, err = p.addrPort(k, k.args)
				vs.SorryServer = &ap
			}
		case "sh-port", "sh-fallback", "mh-port", "mh-fallback":
			err = p.shape(k, 0, false)
			flags = append(flags, k)
		case "real_server":
			if len(k.args) != 1 && len(k.args) != 2 {
				return vs, p.errf(k.line, "real_server: give IP PORT, got %q", strings.Join(k.args, " "))
			}
			if !k.hasBlock {
				k.hasBlock, k.block = true, nil // a bare real_server line: keepalived's defaults
			}
			rs, m, err := p.realServer(k)
			if err != nil {
				return vs, err
			}
			vs.RealServers = append(vs.RealServers, rs)
			rss = append(rss, rsLine{k, m})
		default:
			return vs, p.unknown(k, where, vsKeywords...)
		}
		if err != nil {
			return vs, err
		}
	}
	// The address family: the address's, or for a mark service ip_family's,
	// else the real servers' (as keepalived infers it), else IPv4.
	if svc.FWMark != 0 {
		switch {
		case family != nil:
			svc.IPv6 = family.args[0] == "inet6"
		case len(vs.RealServers) > 0:
			svc.IPv6 = vs.RealServers[0].Server.Addr.Addr().Is6()
		}
	} else if family != nil && (family.args[0] == "inet6") != svc.Is6() {
		return vs, p.wrap(family, family.args[0], fmt.Errorf("not the family of %s", svc.Addr.Addr()))
	}
	svc.Netmask = svc.MaxNetmask()
	if granularity != nil {
		if !svc.Persistent {
			return vs, p.errf(granularity.line, "persistence_granularity: needs persistence_timeout (the netmask groups clients for persistence)")
		}
		bits, err := lab.ParseNetmask(granularity.args[0], svc.Is6())
		if err != nil {
			return vs, p.wrap(granularity, granularity.args[0], err)
		}
		svc.Netmask = bits
	}
	for _, f := range flags {
		fl := lab.SchedFlag(f.key)
		if !svc.Scheduler.HasFlag(fl) {
			return vs, p.errf(f.line, "%s: not a flag of scheduler %s (sh: sh-port, sh-fallback; mh: mh-port, mh-fallback)", f.key, svc.Scheduler)
		}
		svc.SchedFlags = append(svc.SchedFlags, fl)
	}
	slices.Sort(svc.SchedFlags)
	if ss := vs.SorryServer; ss != nil && ss.Addr().Is6() != svc.Is6() {
		return vs, p.errf(seen["sorry_server"], "sorry_server %s: not of the service's address family", ss.Addr())
	}
	for i := range vs.RealServers {
		srv := &vs.RealServers[i].Server
		line := rss[i].stmt.line
		if len(rss[i].stmt.args) == 1 {
			srv.Addr = netip.AddrPortFrom(srv.Addr.Addr(), svc.Addr.Port()) // the service's port
		}
		if srv.Addr.Addr().Is6() != svc.Is6() {
			return vs, p.errf(line, "real_server %s: not of the service's address family", srv.Addr.Addr())
		}
		for _, o := range vs.RealServers[:i] {
			if o.Server.Addr == srv.Addr {
				return vs, p.errf(line, "real_server %s: given twice in %s", srv.Addr, where)
			}
		}
		srv.Method = method
		if rss[i].method != "" {
			srv.Method = rss[i].method
		}
		svc.Servers = append(svc.Servers, *srv)
	}
	return vs, nil
}

func (p *parser) method(s *stmt) (lab.Method, error) {
	v, err := p.oneArg(s)
	if err != nil {
		return "", err
	}
	switch v {
	case "NAT":
		return lab.NAT, nil
	case "DR":
		return lab.DR, nil
	case "TUN":
		return lab.Tunnel, nil
	}
	return "", p.wrap(s, v, errors.New("give NAT, DR or TUN"))
}

// realServer reads a real_server block; the method is "" unless the block
// sets its own.
func (p *parser) realServer(s *stmt) (RealServer, lab.Method, error) {
	rs := RealServer{Server: lab.Server{Weight: 1}}
	var method lab.Method
	ap, err := p.addrPort(s, s.args)
	if err != nil {
		return rs, "", err
	}
	rs.Server.Addr = ap
	where := "real_server " + strings.Join(s.args, " ")
	seen := once{}
	for _, k := range s.block {
		key := k.key
		if key == "lb_kind" {
			key = "lvs_method"
		}
		if key == "HTTP_GET" {
			key = "TCP_CHECK" // one check of either kind
		}
		if err := seen.check(p, &stmt{line: k.line, key: key}); err != nil {
			if key == "TCP_CHECK" {
				return rs, "", p.errf(k.line, "%s: a second health check in %s (lvslab keeps one per real server)", k.key, where)
			}
			return rs, "", err
		}
		var err error
		switch k.key {
		case "weight":
			var n uint64
			n, err = p.number(k, 0, 65535)
			rs.Server.Weight = int(n)
		case "lvs_method", "lb_kind":
			method, err = p.method(k)
		case "inhibit_on_failure":
			err = p.shape(k, 0, false)
			rs.InhibitOnFailure = true
		case "uthreshold":
			var n uint64
			n, err = p.number(k, 0, math.MaxUint32)
			rs.Server.Upper = uint32(n)
		case "lthreshold":
			var n uint64
			n, err = p.number(k, 0, math.MaxUint32)
			rs.Server.Lower = uint32(n)
		case "TCP_CHECK", "HTTP_GET":
			rs.Check, err = p.check(k)
		default:
			return rs, "", p.unknown(k, where, "weight", "lvs_method", "inhibit_on_failure", "uthreshold", "lthreshold", "TCP_CHECK", "HTTP_GET")
		}
		if err != nil {
			return rs, "", err
		}
	}
	if u, l := rs.Server.Upper, rs.Server.Lower; u != 0 && l > u {
		return rs, "", p.errf(seen["lthreshold"], "lthreshold %d: above the uthreshold %d", l, u)
	}
	return rs, method, nil
}

func (p *parser) check(s *stmt) (*Check, error) {
	if err := p.shape(s, 0, true); err != nil {
		return nil, err
	}
	c := &Check{Kind: CheckKind(s.key)}
	known := []string{"connect_port", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry"}
	if c.Kind == HTTPGet {
		known = append(known, "url")
	}
	seen := once{}
	for _, k := range s.block {
		key := k.key
		if key == "nb_get_retry" {
			key = "retry"
		}
		if err := seen.check(p, &stmt{line: k.line, key: key}); err != nil {
			return nil, err
		}
		var err error
		switch {
		case key == "connect_port":
			var n uint64
			n, err = p.number(k, 1, 65535)
			c.ConnectPort = uint16(n)
		case key == "connect_timeout":
			c.ConnectTimeout, err = p.seconds(k)
		case key == "retry":
			var n uint64
			n, err = p.number(k, 1, math.MaxInt32)
			c.Retry = int(n)
		case key == "delay_before_retry":
			c.DelayBeforeRetry, err = p.seconds(k)
		case key == "url" && c.Kind == HTTPGet:
			err = p.url(k, c)
		default:
			return nil, p.unknown(k, s.key, known...)
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Kind == HTTPGet && c.Path == "" {
		return nil, p.errf(s.line, "HTTP_GET: url { path } missing (what to GET)")
	}
	return c, nil
}

func (p *parser) url(s *stmt, c *Check) error {
	if err := p.shape(s, 0, true); err != nil {
		return err
	}
	seen := once{}
	for _, k := range s.block {
		if err := seen.check(p, k); err != nil {
			return err
		}
		var err error
		switch k.key {
		case "path":
			if c.Path, err = p.oneArg(k); err == nil && !strings.HasPrefix(c.Path, "/") {
				err = p.wrap(k, c.Path, errors.New("not a path (it starts with /)"))
			}
		case "status_code":
			var n uint64
			n, err = p.number(k, 100, 599)
			c.StatusCode = int(n)
		default:
			return p.unknown(k, "url", "path", "status_code")
		}
		if err != nil {
			return err
		}
	}
	return nil
}
