// Package apply turns a validated lab specification into kernel state inside each
// node's network namespace: addresses, routes, sysctls, IPVS services and their
// real servers, and the web servers. It reads state back from the kernel and only
// changes what differs, so applying the same spec twice changes nothing.
package apply

import (
	"fmt"
	"net/netip"
	"strings"
)

// Spec is the desired state of a lab, node by node.
type Spec struct {
	Nodes []NodeSpec
}

// NodeSpec is the desired state of one node.
type NodeSpec struct {
	Name      string
	Addresses []Address
	Routes    []Route
	Sysctls   []Sysctl
	Services  []Service // IPVS virtual services (the director)
	Timeouts  *Timeouts // IPVS connection timeouts (ipvsadm --set); nil to leave them
	Marks     []Mark    // firewall marks (mangle PREROUTING)
	Web       *Web      // built-in web server, nil for none
	Commands  [][]string
}

// Address is an address on an interface.
type Address struct {
	Dev    string
	Prefix netip.Prefix
}

// Route is a route; Dst is 0.0.0.0/0 for the default route.
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

// Forwarding methods of a real server.
const (
	MethodNAT    = "nat"    // ipvsadm -m, masquerading
	MethodDR     = "dr"     // ipvsadm -g, gatewaying (the kernel's default)
	MethodTunnel = "tunnel" // ipvsadm -i, IP-in-IP
)

// Service is an IPVS virtual service.
type Service struct {
	Protocol   string         // "tcp" or "udp"; empty for a firewall-mark service
	Addr       netip.AddrPort // virtual address; zero for a firewall-mark service
	FWMark     uint32         // firewall mark (ipvsadm -f); 0 for an address service
	IPv6       bool           // address family of a firewall-mark service (ipvsadm -6)
	Scheduler  string
	SchedFlags []string // sh-fallback, sh-port, mh-fallback, mh-port (ipvsadm -b)
	Persistent bool     // ipvsadm -p
	Timeout    uint32   // persistence timeout in seconds (300 when -p has no value)
	Netmask    int      // persistence granularity as a prefix length: 32 (or 128) by default (-M)
	Servers    []Server
}

// Is6 reports whether the service is IPv6.
func (s Service) Is6() bool {
	if s.FWMark != 0 {
		return s.IPv6
	}
	return s.Addr.Addr().Is6()
}

// Key identifies the service the way the kernel does.
func (s Service) Key() string {
	if s.FWMark != 0 {
		if s.IPv6 {
			return fmt.Sprintf("fwm6:%d", s.FWMark)
		}
		return fmt.Sprintf("fwm:%d", s.FWMark)
	}
	return s.Protocol + ":" + s.Addr.String()
}

// MaxNetmask is the netmask prefix length that puts every client in its own
// persistence group: 32 for IPv4, 128 for IPv6.
func (s Service) MaxNetmask() int {
	if s.Is6() {
		return 128
	}
	return 32
}

// Server is a real server of a service.
type Server struct {
	Addr   netip.AddrPort
	Method string
	Weight int    // 0..65535; 0 quiesces the server (no new connections)
	Upper  uint32 // connection thresholds (ipvsadm -x, -y); 0 for none
	Lower  uint32
}

// Web is the built-in web server: it answers on each port with the node's name.
type Web struct {
	HTTP  []uint16
	HTTPS []uint16 // TLS with a self-signed certificate made at start
	UDP   []uint16 // each datagram is answered with the node's name
}

// Mark sets a firewall mark on packets to Destination on any of Ports, as
// `iptables -t mangle -A PREROUTING -d VIP -p tcp -m multiport --dports 80,443
// -j MARK --set-mark 10` does; an IPVS firewall-mark service then takes them.
type Mark struct {
	Protocol    string
	Destination netip.Addr
	Ports       []uint16
	Mark        uint32
}
