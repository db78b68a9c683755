package lab

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Protocol is the transport protocol of a virtual service.
type Protocol string

// Protocols of address services (a firewall-mark service has none).
const (
	TCP Protocol = "tcp"
	UDP Protocol = "udp"
)

// ParseProtocol reads "tcp" or "udp".
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case TCP, UDP:
		return p, nil
	}
	return "", fmt.Errorf("%q is not tcp or udp", s)
}

// Number is the IP protocol number (6 for TCP, 17 for UDP).
func (p Protocol) Number() uint16 {
	switch p {
	case TCP:
		return 6
	case UDP:
		return 17
	}
	return 0
}

// ProtocolFromNumber names an IP protocol number; ok is false for one lvslab
// does not know.
func ProtocolFromNumber(n uint16) (Protocol, bool) {
	switch n {
	case 6:
		return TCP, true
	case 17:
		return UDP, true
	}
	return Protocol(strconv.Itoa(int(n))), false
}

// Method is a real server's forwarding method.
type Method string

// Forwarding methods.
const (
	NAT    Method = "nat"    // ipvsadm -m, masquerading
	DR     Method = "dr"     // ipvsadm -g, gatewaying (the kernel's and ipvsadm's default)
	Tunnel Method = "tunnel" // ipvsadm -i, IP-in-IP
	Local  Method = "local"  // the director itself serves (read back only)
)

// ParseMethod reads nat, dr or tunnel.
func ParseMethod(s string) (Method, error) {
	switch m := Method(s); m {
	case NAT, DR, Tunnel:
		return m, nil
	}
	return "", fmt.Errorf("%q is not nat, dr or tunnel", s)
}

// Option is the ipvsadm option that selects the method (-m, -g, -i).
func (m Method) Option() string {
	switch m {
	case NAT:
		return "-m"
	case Tunnel:
		return "-i"
	}
	return "-g"
}

// Kind is the method's common name, as keepalived's lb_kind spells it: NAT,
// DR or TUN; "" for local, which has none.
func (m Method) Kind() string {
	switch m {
	case NAT:
		return "NAT"
	case DR:
		return "DR"
	case Tunnel:
		return "TUN"
	}
	return ""
}

// ListName is how ipvsadm -Ln names the method in its Forward column.
func (m Method) ListName() string {
	switch m {
	case NAT:
		return "Masq"
	case DR:
		return "Route"
	case Tunnel:
		return "Tunnel"
	case Local:
		return "Local"
	}
	return "?"
}

// Scheduler is an IPVS scheduling algorithm, named as ipvsadm -s names it.
type Scheduler string

// The schedulers the kernel ships.
const (
	RR    Scheduler = "rr"
	WRR   Scheduler = "wrr"
	LC    Scheduler = "lc"
	WLC   Scheduler = "wlc"
	SED   Scheduler = "sed"
	NQ    Scheduler = "nq"
	SH    Scheduler = "sh"
	DH    Scheduler = "dh"
	MH    Scheduler = "mh"
	FO    Scheduler = "fo"
	OVF   Scheduler = "ovf"
	LBLC  Scheduler = "lblc"
	LBLCR Scheduler = "lblcr"
)

// DefaultScheduler is what the kernel (and ipvsadm) use when none is given.
const DefaultScheduler = WLC

// SchedFlag is a scheduler flag (ipvsadm -b).
type SchedFlag string

// Scheduler flags.
const (
	SHFallback SchedFlag = "sh-fallback"
	SHPort     SchedFlag = "sh-port"
	MHFallback SchedFlag = "mh-fallback"
	MHPort     SchedFlag = "mh-port"
)

// Fallback reports whether the flag is a scheduler's fallback flag (the kernel's
// IP_VS_SVC_F_SCHED1); otherwise it is its port flag (IP_VS_SVC_F_SCHED2).
func (f SchedFlag) Fallback() bool { return strings.HasSuffix(string(f), "-fallback") }

// The registry of schedulers: the one list the parser, the module loader and
// the sandbox read.
type schedInfo struct {
	sched Scheduler
	flags []SchedFlag
}

func registry() []schedInfo {
	return []schedInfo{
		{RR, nil}, {WRR, nil}, {LC, nil}, {WLC, nil}, {SED, nil}, {NQ, nil},
		{SH, []SchedFlag{SHFallback, SHPort}}, {DH, nil},
		{MH, []SchedFlag{MHFallback, MHPort}}, {FO, nil}, {OVF, nil}, {LBLC, nil}, {LBLCR, nil},
	}
}

// Schedulers lists the schedulers the kernel ships, in ipvsadm's order.
func Schedulers() []Scheduler {
	r := registry()
	out := make([]Scheduler, len(r))
	for i, s := range r {
		out[i] = s.sched
	}
	return out
}

func schedulerNames() string {
	var b []string
	for _, s := range Schedulers() {
		b = append(b, string(s))
	}
	return strings.Join(b, ", ")
}

// ParseScheduler reads a scheduler's name.
func ParseScheduler(s string) (Scheduler, error) {
	if slices.Contains(Schedulers(), Scheduler(s)) {
		return Scheduler(s), nil
	}
	return "", fmt.Errorf("%q is not a scheduler the kernel ships (%s)", s, schedulerNames())
}

// Module is the kernel module that implements the scheduler.
func (s Scheduler) Module() string { return "ip_vs_" + string(s) }

// Flags lists the flags the scheduler takes.
func (s Scheduler) Flags() []SchedFlag {
	for _, r := range registry() {
		if r.sched == s {
			return slices.Clone(r.flags)
		}
	}
	return nil
}

// HasFlag reports whether f is a flag of the scheduler.
func (s Scheduler) HasFlag(f SchedFlag) bool { return slices.Contains(s.Flags(), f) }

// OrderFree reports whether the scheduler's picks for a number of connections
// are the same whatever order they reach it in and however many are in flight
// (so a model's prediction can be judged as counts): rr and wrr step through
// their list once per connection, sh, dh and mh hash the packet's addresses,
// and fo takes the heaviest server. The others weigh the connections in
// flight (lc, wlc, sed, nq, ovf) or remember recent destinations
// (lblc, lblcr).
func (s Scheduler) OrderFree() bool {
	switch s {
	case RR, WRR, SH, DH, MH, FO:
		return true
	}
	return false
}

// ModuleIPVS is the IPVS core module.
const ModuleIPVS = "ip_vs"

// MarkModules are the kernel modules IPv4 firewall marks need with legacy
// iptables, the backend of kernels without nftables' ip family (the sandbox
// kernel's). nftables, where the kernel has it, needs only nf_tables, which the
// kernel loads itself when lvslab first talks to it.
func MarkModules() []string {
	return []string{"ip_tables", "iptable_mangle", "xt_mark", "xt_multiport"}
}

// MarkModules6 are those IPv6 firewall marks need with legacy iptables.
func MarkModules6() []string {
	return []string{"ip6_tables", "ip6table_mangle", "xt_mark", "xt_multiport"}
}

// KernelModules are the modules any lab may need: links, bridges, tunnels, IPv6,
// IPVS with every scheduler, and firewall marks.
func KernelModules() []string {
	mods := []string{"veth", "bridge", ModuleIPVS}
	for _, s := range Schedulers() {
		mods = append(mods, s.Module())
	}
	mods = append(mods, "ipip", "ipv6", ModuleNetem)
	mods = append(mods, MarkModules()...)
	return append(mods, MarkModules6()...) // xt_mark and xt_multiport twice: loading is idempotent
}

// ModuleNetem is the qdisc netem steps put on a link.
const ModuleNetem = "sch_netem"

// DefaultTimeout is the persistence timeout ipvsadm uses for -p without a value.
const DefaultTimeout = 300

// Service is an IPVS virtual service.
type Service struct {
	Protocol   Protocol       // empty for a firewall-mark service
	Addr       netip.AddrPort // virtual address; zero for a firewall-mark service
	FWMark     uint32         // firewall mark (ipvsadm -f); 0 for an address service
	IPv6       bool           // address family of a firewall-mark service (ipvsadm -6)
	Scheduler  Scheduler
	SchedFlags []SchedFlag // sorted (ipvsadm -b)
	Persistent bool        // ipvsadm -p
	Timeout    uint32      // persistence timeout in seconds (300 when -p has no value)
	Netmask    int         // persistence granularity as a prefix length: 32 (or 128) by default (-M)
	Servers    []Server
}

// Is6 reports whether the service is IPv6.
func (s Service) Is6() bool {
	if s.FWMark != 0 {
		return s.IPv6
	}
	return s.Addr.Addr().Is6()
}

// Key identifies the service the way the kernel does: "tcp:203.0.113.1:80", "fwm:10".
func (s Service) Key() string {
	if s.FWMark != 0 {
		if s.IPv6 {
			return fmt.Sprintf("fwm6:%d", s.FWMark)
		}
		return fmt.Sprintf("fwm:%d", s.FWMark)
	}
	return string(s.Protocol) + ":" + s.Addr.String()
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
	Method Method
	Weight int    // 0..65535; 0 quiesces the server (no new connections)
	Upper  uint32 // connection thresholds (ipvsadm -x, -y); 0 for none
	Lower  uint32
}

// ParseNetmask reads a persistence netmask as ipvsadm -M takes it (255.255.255.0
// for IPv4, a prefix length for IPv6) and returns its prefix length.
func ParseNetmask(m string, v6 bool) (int, error) {
	if v6 {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 128 {
			return 0, fmt.Errorf("an IPv6 netmask is a prefix length (1..128)")
		}
		return n, nil
	}
	a, err := netip.ParseAddr(m)
	if err != nil || !a.Is4() {
		return 0, fmt.Errorf("not a netmask (like 255.255.255.0)")
	}
	b := a.As4()
	ones, bits := net.IPMask(b[:]).Size()
	if bits == 0 || ones == 0 {
		return 0, fmt.Errorf("not a contiguous netmask of at least one bit")
	}
	return ones, nil
}

// NetmaskString writes a persistence netmask as ipvsadm does: dotted for IPv4,
// a prefix length for IPv6.
func NetmaskString(bits int, v6 bool) string {
	if v6 {
		return strconv.Itoa(bits)
	}
	return net.IP(net.CIDRMask(bits, 32)).String()
}

// TableService is a service as the kernel lists it, with its live counters:
// Servers are in the kernel's list order (the reverse of insertion).
type TableService struct {
	Service
	Connections uint32        // connections scheduled (the estimator folds this in every 2 s)
	Conns       []ServerConns // per real server, in the order of Service.Servers
}

// ServerConns are a real server's live connection counts.
type ServerConns struct {
	Active, Inactive uint32
}

// Table is a snapshot of a director's IPVS table.
type Table struct {
	Header   string // first line of /proc/net/ip_vs, e.g. "IP Virtual Server version 1.2.1 (size=4096)"
	Services []TableService
}

// Specs returns the table's services without their counters.
func (t *Table) Specs() []Service {
	out := make([]Service, len(t.Services))
	for i, s := range t.Services {
		out[i] = s.Service
	}
	return out
}

// Find returns the listed service with key, or nil.
func (t *Table) Find(key string) *TableService {
	for i := range t.Services {
		if t.Services[i].Key() == key {
			return &t.Services[i]
		}
	}
	return nil
}
