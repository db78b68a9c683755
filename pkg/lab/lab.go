// Package lab holds lvslab's typed lab data: what each node of a lab should hold
// (addresses, routes, sysctls, IPVS services and real servers, firewall marks, web
// servers, commands), the checks a scenario declares, and the registries of
// schedulers, forwarding methods and protocols the kernel knows. It is the floor
// every other package stands on; nothing in it touches the kernel.
package lab

import (
	"fmt"
	"net/netip"
	"strings"
)

// Runtime names how a lab's nodes are made.
type Runtime string

// Runtimes.
const (
	RuntimeNetns        Runtime = "netns"        // one named network namespace per node
	RuntimeContainerlab Runtime = "containerlab" // Docker containers deployed by containerlab
)

// Spec is the desired state of a lab, node by node.
type Spec struct {
	Nodes []NodeSpec
}

// NodeSpec is the desired state of one node.
type NodeSpec struct {
	Name       string
	Addresses  []Address
	Routes     []Route
	Sysctls    []Sysctl
	Services   []Service // IPVS virtual services (the director)
	Timeouts   *Timeouts // IPVS connection timeouts (ipvsadm --set); nil to leave them
	Marks      []Mark    // firewall marks (at prerouting, where iptables' mangle table is)
	Web        *Web      // built-in web server, nil for none
	Commands   [][]string
	Keepalived *Keepalived // keepalived started with a keepalived.conf lvslab writes; nil for none
}

// Director returns the node that holds IPVS services, or "".
func (s *Spec) Director() string {
	for _, n := range s.Nodes {
		if len(n.Services) > 0 {
			return n.Name
		}
	}
	return ""
}

// Node returns the spec of a node.
func (s *Spec) Node(name string) (NodeSpec, bool) {
	for _, n := range s.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeSpec{}, false
}

// ServiceFor returns the director's service that traffic to dst reaches: the
// one with dst's address and port (or its address and port 0: persistent
// client connection), else a firewall-mark service.
func (s *Spec) ServiceFor(dst netip.AddrPort) (Service, bool) {
	d, _ := s.Node(s.Director())
	for _, svc := range d.Services {
		if svc.FWMark == 0 && (svc.Addr == dst || (svc.Addr.Port() == 0 && svc.Addr.Addr() == dst.Addr())) {
			return svc, true
		}
	}
	for _, svc := range d.Services {
		if svc.FWMark != 0 {
			return svc, true
		}
	}
	return Service{}, false
}

// OwnerOf returns the node that holds address a, or "".
func (s *Spec) OwnerOf(a netip.Addr) string {
	for _, n := range s.Nodes {
		for _, x := range n.Addresses {
			if x.Prefix.Addr() == a {
				return n.Name
			}
		}
	}
	return ""
}

// Modules are the kernel modules the spec needs loaded: IPVS and each scheduler
// it uses, those of firewall marks, ipip for an address on tunl0 (LVS-TUN) and
// ipv6 for IPv6 addresses.
func (s *Spec) Modules() []string {
	var mods []string
	seen := map[string]bool{}
	add := func(m ...string) {
		for _, x := range m {
			if !seen[x] {
				seen[x] = true
				mods = append(mods, x)
			}
		}
	}
	for _, n := range s.Nodes {
		if len(n.Services) > 0 {
			add(ModuleIPVS)
		}
		for _, svc := range n.Services {
			add(svc.Scheduler.Module())
		}
		if len(n.Marks) > 0 {
			add(MarkModules()...)
		}
		for _, m := range n.Marks {
			if m.Destination.Is6() {
				add("ipv6")
				add(MarkModules6()...)
			}
		}
		for _, a := range n.Addresses {
			if a.Dev == "tunl0" {
				add("ipip")
			}
			if a.Prefix.Addr().Is6() {
				add("ipv6")
			}
		}
	}
	return mods
}

// IPv6 reports whether the spec uses IPv6: an IPv6 address or service.
func (s *Spec) IPv6() bool {
	for _, n := range s.Nodes {
		for _, a := range n.Addresses {
			if a.Prefix.Addr().Is6() {
				return true
			}
		}
		for _, svc := range n.Services {
			if svc.Is6() {
				return true
			}
		}
	}
	return false
}

// Address is an address on an interface.
type Address struct {
	Dev    string
	Prefix netip.Prefix
}

func (a Address) String() string { return a.Prefix.String() + " dev " + a.Dev }

// Route is a route; Dst is 0.0.0.0/0 (or ::/0) for the default route.
type Route struct {
	Dst netip.Prefix
	Via netip.Addr // zero for a device route
	Dev string     // empty to let the kernel pick from Via
}

func (r Route) String() string {
	s := r.Dst.String()
	if r.Via.IsValid() {
		s += " via " + r.Via.String()
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// Sysctl is a kernel parameter under net., written like "net.ipv4.ip_forward".
type Sysctl struct {
	Key, Value string
}

func (s Sysctl) String() string { return s.Key + "=" + s.Value }

// ValidSysctlKey reports why key cannot be set by lvslab, or nil. Only keys under
// "net." are namespaced per node; anything else would change the whole kernel.
func ValidSysctlKey(key string) error {
	if !strings.HasPrefix(key, "net.") {
		return fmt.Errorf("%q is outside net. (only per-namespace network sysctls may be set)", key)
	}
	for _, part := range strings.Split(key, ".") {
		if part == "" || part == ".." || strings.ContainsAny(part, "/\x00") {
			return fmt.Errorf("%q is not a valid sysctl key", key)
		}
	}
	return nil
}

// Path is the file under /proc/sys that holds the key.
func (s Sysctl) Path() string {
	return "/proc/sys/" + strings.ReplaceAll(s.Key, ".", "/")
}

// Timeouts are IPVS's connection timeouts, as ipvsadm --set tcp tcpfin udp sets
// them (seconds; 0 leaves that one unchanged).
type Timeouts struct {
	TCP, TCPFin, UDP int
}

// Web is the built-in web server: it answers on each port with the node's name.
type Web struct {
	HTTP  []uint16
	HTTPS []uint16 // TLS with a self-signed certificate made at start
	UDP   []uint16 // each datagram is answered with the node's name
}

// Mark sets a firewall mark on packets to Destination (IPv4 or IPv6) on any of
// Ports, as `iptables -t mangle -A PREROUTING -d VIP -p tcp -m multiport
// --dports 80,443 -j MARK --set-mark 10` (or nftables' `ip daddr VIP tcp dport {
// 80, 443 } meta mark set 10` at priority mangle) does; an IPVS firewall-mark
// service then takes them.
type Mark struct {
	Protocol    Protocol
	Destination netip.Addr
	Ports       []uint16
	Mark        uint32
}

func (m Mark) String() string {
	return fmt.Sprintf("mark %s %s:%v with %d", m.Protocol, m.Destination, m.Ports, m.Mark)
}
