// Package scenario reads and validates scenario files: which topology a lab is
// built from, what each node should hold, and the checks lvslab verify runs.
// Every error names the file, the field and the bad value.
package scenario

import (
	"bytes"
	"fmt"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
	"gopkg.in/yaml.v3"
)

// Scenario is a validated scenario file with its topology.
type Scenario struct {
	File        string
	Name        string // lab name
	Description string
	Topology    *topo.Topology
	Spec        lab.Spec
	Checks      []lab.Check // what lvslab verify checks
	Steps       []lab.Step  // changes to the lab, each followed by its checks (after Checks)
	Source      []byte      // the file's text
}

// Director returns the node that holds IPVS services, or "".
func (s *Scenario) Director() string { return s.Spec.Director() }

// Rename gives the lab another name, so one scenario can run twice side by side.
func (s *Scenario) Rename(name string) error {
	if !topo.ValidLabName(name) {
		return fmt.Errorf("lab name %q is not valid (letters, digits, '-', '_'; at most %d)", name, MaxLabName)
	}
	s.Name, s.Topology.Name = name, name
	return nil
}

// MaxLabName is the longest lab name.
const MaxLabName = topo.MaxLabName

type rawScenario struct {
	Version     int                 `yaml:"version,omitempty"`
	Name        string              `yaml:"name,omitempty"`
	Description string              `yaml:"description,omitempty"`
	Topology    string              `yaml:"topology,omitempty"`
	Nodes       map[string]*rawNode `yaml:"nodes,omitempty"`
	Checks      []rawCheck          `yaml:"checks,omitempty"`
	Steps       []rawStep           `yaml:"steps,omitempty"`
}

type rawNode struct {
	Addresses  map[string][]string `yaml:"addresses,omitempty"`
	Routes     []rawRoute          `yaml:"routes,omitempty"`
	Sysctls    map[string]string   `yaml:"sysctls,omitempty"`
	IPVS       *rawIPVS            `yaml:"ipvs,omitempty"`
	Web        *rawWeb             `yaml:"web,omitempty"`
	Firewall   *rawFirewall        `yaml:"firewall,omitempty"`
	Commands   [][]string          `yaml:"commands,omitempty"`
	Keepalived *rawKeepalived      `yaml:"keepalived,omitempty"`
}

type rawRoute struct {
	To  string `yaml:"to,omitempty"`
	Via string `yaml:"via,omitempty"`
	Dev string `yaml:"dev,omitempty"`
}

type rawIPVS struct {
	Services []rawService `yaml:"services,omitempty"`
	Rules    []string     `yaml:"rules,omitempty"`    // ipvsadm command lines, run after services
	Timeouts *rawTimeouts `yaml:"timeouts,omitempty"` // ipvsadm --set tcp tcpfin udp
}

type rawTimeouts struct {
	TCP    int `yaml:"tcp,omitempty"`
	TCPFin int `yaml:"tcpfin,omitempty"`
	UDP    int `yaml:"udp,omitempty"`
}

type rawService struct {
	Protocol   string      `yaml:"protocol,omitempty"`
	Address    string      `yaml:"address,omitempty"`
	FWMark     uint32      `yaml:"fwmark,omitempty"`
	IPv6       bool        `yaml:"ipv6,omitempty"`
	Scheduler  string      `yaml:"scheduler,omitempty"`
	Flags      []string    `yaml:"flags,omitempty"`
	Persistent any         `yaml:"persistent,omitempty"` // seconds, or true for ipvsadm's 300
	Netmask    string      `yaml:"netmask,omitempty"`
	Servers    []rawServer `yaml:"servers,omitempty"`
}

type rawServer struct {
	Address string `yaml:"address,omitempty"`
	Method  string `yaml:"method,omitempty"`
	Weight  *int   `yaml:"weight,omitempty"`
	Upper   *int64 `yaml:"upper,omitempty"`
	Lower   *int64 `yaml:"lower,omitempty"`
}

type rawWeb struct {
	HTTP  []int `yaml:"http,omitempty"`
	HTTPS []int `yaml:"https,omitempty"`
	UDP   []int `yaml:"udp,omitempty"`
}

type rawFirewall struct {
	Marks []rawMark `yaml:"marks,omitempty"`
}

type rawMark struct {
	Protocol    string `yaml:"protocol,omitempty"`
	Destination string `yaml:"destination,omitempty"`
	Ports       []int  `yaml:"ports,omitempty"`
	Mark        uint32 `yaml:"mark,omitempty"`
}

// Error is a problem in a scenario file: the file, the field and what is wrong
// with its value.
type Error struct {
	File, Field, Msg string
}

func (e *Error) Error() string { return e.File + ": " + e.Field + ": " + e.Msg }

// Load reads a scenario file and the topology it names, and validates both. Nothing
// in the kernel is touched.
func Load(path string) (*Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scenario: %w", err)
	}
	return Parse(path, b)
}

// Parse validates a scenario held in memory; its topology path is resolved against
// the directory of file.
func Parse(file string, data []byte) (*Scenario, error) {
	var raw rawScenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, topo.YAMLError(file, err)
	}
	fail := func(field, f string, a ...any) error { return &Error{file, field, fmt.Sprintf(f, a...)} }
	if raw.Version != 1 {
		return nil, fail("version", "%d is not supported (this lvslab reads version 1)", raw.Version)
	}
	if raw.Topology == "" {
		return nil, fail("topology", "missing (path of a containerlab topology file)")
	}
	tpath := raw.Topology
	if !filepath.IsAbs(tpath) {
		tpath = filepath.Join(filepath.Dir(file), tpath)
	}
	t, err := topo.Load(tpath)
	if err != nil {
		return nil, fmt.Errorf("%s: topology: %w", file, err)
	}
	s := &Scenario{File: file, Name: t.Name, Description: raw.Description, Topology: t, Source: data}
	if raw.Name != "" {
		// The lab name may differ from the topology's, so two labs of one topology run side by side.
		t.Name = raw.Name
		if !topo.ValidLabName(raw.Name) {
			return nil, fail("name", "%q is not a valid lab name (letters, digits, '-', '_'; at most %d)", raw.Name, MaxLabName)
		}
		s.Name = raw.Name
	}
	names := make([]string, 0, len(raw.Nodes))
	for n := range raw.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	vips := map[string]string{}
	for _, name := range names {
		rn := raw.Nodes[name]
		if rn != nil && rn.Keepalived != nil {
			rn.Keepalived.base = filepath.Dir(file)
		}
		field := "nodes." + name
		tn, ok := t.Nodes[name]
		if !ok {
			return nil, fail(field, "node %q is not in topology %s", name, t.File)
		}
		if tn.Kind != topo.KindLinux {
			return nil, fail(field, "node %q is a %s; only linux nodes can be configured", name, tn.Kind)
		}
		if rn == nil {
			continue
		}
		ns, err := parseNode(t, name, rn, fail, vips)
		if err != nil {
			return nil, err
		}
		s.Spec.Nodes = append(s.Spec.Nodes, ns)
	}
	if err := checkServers(s, fail); err != nil {
		return nil, err
	}
	for i, rc := range raw.Checks {
		c, err := parseCheck(s, fmt.Sprintf("checks[%d]", i), rc, fail)
		if err != nil {
			return nil, err
		}
		s.Checks = append(s.Checks, c)
	}
	if s.Steps, err = parseSteps(s, raw.Steps, fail); err != nil {
		return nil, err
	}
	return s, nil
}

// checkServers checks each real server against the network: it must be a node of
// the scenario; a NAT server must be reachable through the director (replies come
// back through it); a DR server must share an L2 segment with the director (the
// director rewrites only the MAC address).
func checkServers(s *Scenario, fail failFunc) error {
	for _, d := range s.Spec.Nodes {
		for _, svc := range d.Services {
			for _, srv := range svc.Servers {
				field := fmt.Sprintf("nodes.%s.ipvs (service %s, real server %s)", d.Name, svc.Key(), srv.Addr)
				owner := s.Spec.OwnerOf(srv.Addr.Addr())
				if owner == "" {
					return fail(field, "no node of this scenario has address %s", srv.Addr.Addr())
				}
				switch srv.Method {
				case lab.NAT:
					if !reaches(d, srv.Addr.Addr()) {
						return fail(field, "%s (nat) is not reachable through %s: none of its addresses or routes covers it", srv.Addr.Addr(), d.Name)
					}
				case lab.DR:
					if !slices.Contains(l2Segment(s.Topology, d.Name), owner) {
						return fail(field, "%s (dr) is on %s, which shares no L2 segment with %s", srv.Addr.Addr(), owner, d.Name)
					}
				}
			}
		}
	}
	return nil
}

func reaches(n lab.NodeSpec, a netip.Addr) bool {
	for _, x := range n.Addresses {
		if x.Dev != "lo" && x.Prefix.Masked().Contains(a) {
			return true
		}
	}
	for _, r := range n.Routes {
		if r.Dst.Contains(a) {
			return true
		}
	}
	return false
}

// l2Segment lists the nodes that share a link or a bridge with node.
func l2Segment(t *topo.Topology, node string) []string {
	var out []string
	for _, p := range t.Peers(node) {
		if t.Nodes[p].Kind == topo.KindBridge {
			out = append(out, t.Peers(p)...)
		} else {
			out = append(out, p)
		}
	}
	return out
}

type failFunc func(field, f string, a ...any) error

// haMark marks, in the map of services already defined, those of a node
// that runs keepalived.
const haMark = "keepalived "

// claimVIP records that field defines service key. A service is defined once,
// except on directors that share it under keepalived (each holds the table;
// VRRP decides which one gets the traffic): two nodes with a keepalived
// section may both define it, never one node twice.
func claimVIP(vips map[string]string, key, field string, ha bool, fail failFunc) error {
	node := func(f string) string { parts := strings.SplitN(f, ".", 3); return parts[1] }
	if prev, dup := vips[key]; dup {
		p, prevHA := strings.CutPrefix(prev, haMark)
		if !ha || !prevHA || node(p) == node(field) {
			return fail(field, "service %s is already defined at %s", key, p)
		}
	}
	if ha {
		field = haMark + field
	}
	vips[key] = field
	return nil
}

func parseNode(t *topo.Topology, name string, rn *rawNode, fail failFunc, vips map[string]string) (lab.NodeSpec, error) {
	field := "nodes." + name
	ns := lab.NodeSpec{Name: name}
	// lo, the file's interfaces, and tunl0 (the kernel's ipip device, for LVS-TUN).
	ifaces := append([]string{"lo"}, t.Interfaces(name)...)
	ifaces = append(ifaces, "tunl0")
	devs := make([]string, 0, len(rn.Addresses))
	for d := range rn.Addresses {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, dev := range devs {
		f := field + ".addresses." + dev
		if !slices.Contains(ifaces, dev) {
			return ns, fail(f, "node %s has no interface %q (it has %s)", name, dev, strings.Join(ifaces, ", "))
		}
		for i, a := range rn.Addresses[dev] {
			p, err := netip.ParsePrefix(a)
			if err != nil {
				return ns, fail(fmt.Sprintf("%s[%d]", f, i), "%q is not an address with a prefix length (like 203.0.113.1/24)", a)
			}
			ns.Addresses = append(ns.Addresses, lab.Address{Dev: dev, Prefix: p})
		}
	}
	for i, rr := range rn.Routes {
		f := fmt.Sprintf("%s.routes[%d]", field, i)
		var r lab.Route
		switch rr.To {
		case "default", "0.0.0.0/0":
			r.Dst = netip.MustParsePrefix("0.0.0.0/0")
		case "default6", "::/0":
			r.Dst = netip.MustParsePrefix("::/0")
		case "":
			return ns, fail(f+".to", "missing (a prefix, or default)")
		default:
			p, err := netip.ParsePrefix(rr.To)
			if err != nil {
				a, aerr := netip.ParseAddr(rr.To)
				if aerr != nil {
					return ns, fail(f+".to", "%q is not a prefix (like 198.51.100.0/24), an address, or default", rr.To)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			r.Dst = p.Masked()
		}
		if rr.Via != "" {
			a, err := netip.ParseAddr(rr.Via)
			if err != nil {
				return ns, fail(f+".via", "%q is not an address", rr.Via)
			}
			if a.Is4() != r.Dst.Addr().Is4() {
				return ns, fail(f+".via", "%q is not of the same family as %s", rr.Via, r.Dst)
			}
			r.Via = a
		}
		if rr.Dev != "" && !slices.Contains(ifaces, rr.Dev) {
			return ns, fail(f+".dev", "node %s has no interface %q", name, rr.Dev)
		}
		r.Dev = rr.Dev
		if !r.Via.IsValid() && r.Dev == "" {
			return ns, fail(f, "needs via or dev")
		}
		ns.Routes = append(ns.Routes, r)
	}
	keys := make([]string, 0, len(rn.Sysctls))
	for k := range rn.Sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := lab.ValidSysctlKey(k); err != nil {
			return ns, fail(field+".sysctls", "%v", err)
		}
		v := strings.TrimSpace(rn.Sysctls[k])
		if v == "" || strings.ContainsAny(v, "\n\x00") {
			return ns, fail(field+".sysctls."+k, "%q is not a valid value", rn.Sysctls[k])
		}
		ns.Sysctls = append(ns.Sysctls, lab.Sysctl{Key: k, Value: v})
	}
	if rn.IPVS != nil {
		var table ipvsadm.Rules
		for i, rs := range rn.IPVS.Services {
			f := fmt.Sprintf("%s.ipvs.services[%d]", field, i)
			svc, err := parseService(f, rs, fail)
			if err != nil {
				return ns, err
			}
			if err := claimVIP(vips, svc.Key(), f, rn.Keepalived != nil, fail); err != nil {
				return ns, err
			}
			table = append(table, svc)
		}
		for i, line := range rn.IPVS.Rules {
			f := fmt.Sprintf("%s.ipvs.rules[%d]", field, i)
			r, err := ipvsadm.ParseRule(line)
			if err == nil {
				err = table.Exec(r)
			}
			if err != nil {
				return ns, fail(f, "%q: %v", line, err)
			}
			if r.Op == ipvsadm.AddService {
				if err := claimVIP(vips, r.Service.Key(), f, rn.Keepalived != nil, fail); err != nil {
					return ns, err
				}
			}
		}
		ns.Services = table
		if t := rn.IPVS.Timeouts; t != nil {
			for _, v := range []struct {
				name string
				val  int
			}{{"tcp", t.TCP}, {"tcpfin", t.TCPFin}, {"udp", t.UDP}} {
				if v.val < 0 || v.val > 1<<31/1000 {
					return ns, fail(field+".ipvs.timeouts."+v.name, "%d is not a timeout in seconds", v.val)
				}
			}
			ns.Timeouts = &lab.Timeouts{TCP: t.TCP, TCPFin: t.TCPFin, UDP: t.UDP}
		}
	}
	if rn.Web != nil {
		w := rn.Web
		if len(w.HTTP)+len(w.HTTPS)+len(w.UDP) == 0 {
			return ns, fail(field+".web", "no ports (give at least one, like http: [80])")
		}
		ns.Web = &lab.Web{}
		for _, kind := range []struct {
			name  string
			ports []int
			dst   *[]uint16
		}{{"http", w.HTTP, &ns.Web.HTTP}, {"https", w.HTTPS, &ns.Web.HTTPS}, {"udp", w.UDP, &ns.Web.UDP}} {
			for i, p := range kind.ports {
				if p < 1 || p > 65535 {
					return ns, fail(fmt.Sprintf("%s.web.%s[%d]", field, kind.name, i), "port %d is out of range (1..65535)", p)
				}
				*kind.dst = append(*kind.dst, uint16(p))
			}
		}
	}
	if rn.Firewall != nil {
		for i, m := range rn.Firewall.Marks {
			f := fmt.Sprintf("%s.firewall.marks[%d]", field, i)
			proto, err := lab.ParseProtocol(m.Protocol)
			if err != nil {
				return ns, fail(f+".protocol", "%v", err)
			}
			fm := lab.Mark{Protocol: proto, Mark: m.Mark}
			a, err := netip.ParseAddr(m.Destination)
			if err != nil || a.Zone() != "" {
				return ns, fail(f+".destination", "%q is not an IPv4 or IPv6 address", m.Destination)
			}
			fm.Destination = a.Unmap() // an IPv4-mapped address is the IPv4 address, as for services
			if m.Mark == 0 {
				return ns, fail(f+".mark", "missing or 0 (a firewall mark is 1..4294967295)")
			}
			if len(m.Ports) == 0 || len(m.Ports) > 15 {
				return ns, fail(f+".ports", "give 1 to 15 ports")
			}
			for j, p := range m.Ports {
				if p < 1 || p > 65535 {
					return ns, fail(fmt.Sprintf("%s.ports[%d]", f, j), "port %d is out of range (1..65535)", p)
				}
				fm.Ports = append(fm.Ports, uint16(p))
			}
			ns.Marks = append(ns.Marks, fm)
		}
	}
	for i, c := range rn.Commands {
		if len(c) == 0 || c[0] == "" {
			return ns, fail(fmt.Sprintf("%s.commands[%d]", field, i), "empty command")
		}
	}
	ns.Commands = rn.Commands
	switch {
	case rn.Keepalived != nil && rn.Keepalived.File != "":
		if rn.IPVS != nil {
			return ns, fail(field+".keepalived.file", "the file's virtual servers are the node's IPVS services: give the file or an ipvs section, not both")
		}
		k, services, err := keepalivedFile(t, field+".keepalived", name, rn.Keepalived, fail)
		if err != nil {
			return ns, err
		}
		for i, svc := range services {
			if err := claimVIP(vips, svc.Key(), fmt.Sprintf("%s.keepalived.file(virtual_server %d)", field, i+1), true, fail); err != nil {
				return ns, err
			}
		}
		ns.Keepalived, ns.Services = k, services
	case rn.Keepalived != nil:
		k, err := parseKeepalived(t, field+".keepalived", name, rn.Keepalived, fail)
		if err != nil {
			return ns, err
		}
		ns.Keepalived = k
	}
	return ns, nil
}

func parseService(field string, rs rawService, fail failFunc) (lab.Service, error) {
	var svc lab.Service
	switch {
	case rs.FWMark != 0:
		if rs.Protocol != "" || rs.Address != "" {
			return svc, fail(field+".fwmark", "a firewall-mark service has no protocol or address")
		}
		svc.FWMark, svc.IPv6 = rs.FWMark, rs.IPv6
	case rs.Protocol == string(lab.TCP) || rs.Protocol == string(lab.UDP):
		svc.Protocol = lab.Protocol(rs.Protocol)
		ap, err := netip.ParseAddrPort(rs.Address)
		if err != nil {
			return svc, fail(field+".address", "%q is not address:port (like 203.0.113.1:80 or [2001:db8::1]:80)", rs.Address)
		}
		// As ipvsadm reads it: an IPv4-mapped address is the IPv4 address.
		svc.Addr = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case rs.Protocol == "":
		return svc, fail(field+".protocol", "missing (tcp or udp, or give fwmark)")
	default:
		return svc, fail(field+".protocol", "%q is not tcp or udp", rs.Protocol)
	}
	svc.Scheduler = lab.DefaultScheduler
	if rs.Scheduler != "" {
		sched, err := lab.ParseScheduler(rs.Scheduler)
		if err != nil {
			return svc, fail(field+".scheduler", "%v", err)
		}
		svc.Scheduler = sched
	}
	for j, name := range rs.Flags {
		fl := lab.SchedFlag(name)
		if !svc.Scheduler.HasFlag(fl) {
			return svc, fail(fmt.Sprintf("%s.flags[%d]", field, j), "%q is not a flag of scheduler %s", fl, svc.Scheduler)
		}
		if !slices.Contains(svc.SchedFlags, fl) {
			svc.SchedFlags = append(svc.SchedFlags, fl)
		}
	}
	slices.Sort(svc.SchedFlags)
	switch p := rs.Persistent.(type) {
	case nil:
	case bool:
		if p {
			svc.Persistent, svc.Timeout = true, lab.DefaultTimeout
		}
	case int:
		if p < 1 || p > math.MaxUint32 {
			return svc, fail(field+".persistent", "%d is not a timeout in seconds (1..4294967295, or true for 300)", p)
		}
		svc.Persistent, svc.Timeout = true, uint32(p)
	default:
		return svc, fail(field+".persistent", "%v is not a timeout in seconds (or true for 300)", p)
	}
	svc.Netmask = svc.MaxNetmask()
	if rs.Netmask != "" {
		if !svc.Persistent {
			return svc, fail(field+".netmask", "needs persistent (the netmask groups clients for persistence)")
		}
		bits, err := lab.ParseNetmask(rs.Netmask, svc.Is6())
		if err != nil {
			return svc, fail(field+".netmask", "%q is not a netmask (255.255.255.0, or a prefix length for IPv6)", rs.Netmask)
		}
		svc.Netmask = bits
	}
	seen := map[netip.AddrPort]bool{}
	for j, r := range rs.Servers {
		f := fmt.Sprintf("%s.servers[%d]", field, j)
		ap, err := netip.ParseAddrPort(r.Address)
		if err != nil {
			a, aerr := netip.ParseAddr(r.Address)
			if aerr != nil {
				return svc, fail(f+".address", "%q is not address:port", r.Address)
			}
			ap = netip.AddrPortFrom(a, svc.Addr.Port())
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if ap.Addr().Is6() != svc.Is6() {
			return svc, fail(f+".address", "%q is not of the service's address family", r.Address)
		}
		if seen[ap] {
			return svc, fail(f+".address", "%q is listed twice", r.Address)
		}
		seen[ap] = true
		srv := lab.Server{Addr: ap, Method: lab.DR, Weight: 1} // dr: ipvsadm's default, -g
		if r.Method != "" {
			m, err := lab.ParseMethod(r.Method)
			if err != nil {
				return svc, fail(f+".method", "%v", err)
			}
			srv.Method = m
		}
		if r.Weight != nil {
			if *r.Weight < 0 || *r.Weight > 65535 {
				return svc, fail(f+".weight", "%d is out of range (0..65535)", *r.Weight)
			}
			srv.Weight = *r.Weight
		}
		for _, th := range []struct {
			name string
			v    *int64
			dst  *uint32
		}{{"upper", r.Upper, &srv.Upper}, {"lower", r.Lower, &srv.Lower}} {
			if th.v == nil {
				continue
			}
			if *th.v < 0 || *th.v > 1<<32-1 {
				return svc, fail(f+"."+th.name, "%d is out of range (0..4294967295)", *th.v)
			}
			*th.dst = uint32(*th.v)
		}
		if srv.Upper != 0 && srv.Lower > srv.Upper {
			return svc, fail(f+".lower", "%d is above the upper threshold %d", srv.Lower, srv.Upper)
		}
		svc.Servers = append(svc.Servers, srv)
	}
	return svc, nil
}
