package main

import (
	"fmt"
	"io"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Section is one part of the snapshot: a heading and its lines.
type Section struct {
	Name string
	// Lines in the order the section prints them: sorted when the order carries
	// no meaning (addresses, routes, sysctls), as the tool printed them when it
	// does (iptables rules, the nft ruleset).
	Lines []string
	// Sorted says whether Write sorts Lines.
	Sorted bool
}

// Write prints sections in the order given as "== name" followed by its lines (sorted
// and without repeats when the section says so), and "(none)" for an empty section.
func Write(w io.Writer, sections []Section) error {
	var b strings.Builder
	for _, s := range sections {
		fmt.Fprintf(&b, "== %s\n", s.Name)
		lines := s.Lines
		if s.Sorted {
			lines = slices.Compact(slices.Sorted(slices.Values(lines)))
		}
		if len(lines) == 0 {
			b.WriteString("(none)\n")
		}
		for _, l := range lines {
			b.WriteString(l)
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Lines splits a tool's output into lines without trailing space, dropping empty ones.
func Lines(out string) []string {
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if l = strings.TrimRight(l, " \t\r"); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// sysctlExclusions are sysctls under /proc/sys/net whose values change without
// anyone configuring anything, with the reason. Patterns are paths relative to
// /proc/sys/net as path.Match takes them. Files that cannot be read (route/flush is
// write-only, conf/*/stable_secret fails until set) are skipped without being
// listed here. Two snapshots a few minutes apart, with traffic in between, differ
// in nothing else on the machines this project runs on; route/gc_* are settings
// and stay.
var sysctlExclusions = []struct{ Pattern, Reason string }{
	{"netfilter/nf_conntrack_count", "a counter: connections tracked right now"},
	{"ipv4/tcp_fastopen_key", "made at random on the first TCP Fast Open use"},
	{"core/netdev_rss_key", "made at random the first time a driver asks for it"},
}

// ExcludedSysctl reports whether the sysctl at rel (relative to /proc/sys/net) is
// left out of the snapshot, and why.
func ExcludedSysctl(rel string) (string, bool) {
	for _, e := range sysctlExclusions {
		if ok, _ := path.Match(e.Pattern, rel); ok {
			return e.Reason, true
		}
	}
	return "", false
}

// SysctlLine is "net/rel=value", with the value's runs of blanks (tabs separate the
// fields of multi-valued sysctls) and line breaks made one space.
func SysctlLine(rel, value string) string {
	return "net/" + rel + "=" + strings.Join(strings.Fields(value), " ")
}

// tableName names a routing table as ip(8) does.
func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return strconv.Itoa(t)
}

func familyName(f int) string {
	switch f {
	case netlink.FAMILY_V4:
		return "inet"
	case netlink.FAMILY_V6:
		return "inet6"
	}
	return "family" + strconv.Itoa(f)
}

var routeTypes = map[int]string{
	unix.RTN_UNICAST: "unicast", unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast",
	unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_THROW: "throw",
	unix.RTN_NAT: "nat",
}

func routeType(t int) string {
	if n, ok := routeTypes[t]; ok {
		return n
	}
	return "type" + strconv.Itoa(t)
}

// linkName names the link with index i, or "if<i>" for one not in links.
func linkName(links map[int]string, i int) string {
	if n, ok := links[i]; ok {
		return n
	}
	return "if" + strconv.Itoa(i)
}

// addrFlags are the address flags the snapshot shows: the ones that say how an
// address was configured. tentative, optimistic and deprecated are left out: they
// change on their own as duplicate address detection and lifetimes run.
var addrFlags = []struct {
	bit  int
	name string
}{
	{unix.IFA_F_SECONDARY, "secondary"}, {unix.IFA_F_NODAD, "nodad"},
	{unix.IFA_F_HOMEADDRESS, "home"}, {unix.IFA_F_DADFAILED, "dadfailed"},
	{unix.IFA_F_PERMANENT, "permanent"}, {unix.IFA_F_MANAGETEMPADDR, "mngtmpaddr"},
	{unix.IFA_F_NOPREFIXROUTE, "noprefixroute"}, {unix.IFA_F_MCAUTOJOIN, "autojoin"},
	{unix.IFA_F_STABLE_PRIVACY, "stable-privacy"},
}

// FormatAddr prints an address as "dev inet 192.0.2.1/24 scope global ...";
// lifetimes are left out (they count down).
func FormatAddr(a netlink.Addr, links map[int]string) string {
	fam := "inet"
	if a.IP.To4() == nil {
		fam = "inet6"
	}
	s := fmt.Sprintf("%s %s %s scope %s", linkName(links, a.LinkIndex), fam, a.IPNet, netlink.Scope(a.Scope))
	if a.Peer != nil {
		s += " peer " + a.Peer.String()
	}
	if a.Broadcast != nil {
		s += " brd " + a.Broadcast.String()
	}
	if a.Label != "" && a.Label != linkName(links, a.LinkIndex) {
		s += " label " + a.Label
	}
	for _, f := range addrFlags {
		if a.Flags&f.bit != 0 {
			s += " " + f.name
		}
	}
	return s
}

// FormatLink prints a link as "name type mtu N up|down [master M]"; counters and
// the carrier state are left out.
func FormatLink(l netlink.Link, links map[int]string) string {
	a := l.Attrs()
	state := "down"
	if a.Flags&net.FlagUp != 0 {
		state = "up"
	}
	s := fmt.Sprintf("%s %s mtu %d %s", a.Name, l.Type(), a.MTU, state)
	if a.MasterIndex != 0 {
		s += " master " + linkName(links, a.MasterIndex)
	}
	return s
}

// FormatRoute prints a route as "table T inet TYPE DST [via GW] [dev D] [src S]
// proto P scope S metric M ...", with the fields ip(8) shows; expiry times and the
// kernel's per-route statistics are left out.
func FormatRoute(r netlink.Route, links map[int]string) string {
	dst := "default"
	if r.Dst != nil {
		if ones, _ := r.Dst.Mask.Size(); ones != 0 || !r.Dst.IP.IsUnspecified() {
			dst = r.Dst.String()
		}
	}
	s := fmt.Sprintf("table %s %s %s %s", tableName(r.Table), familyName(r.Family), routeType(r.Type), dst)
	if r.Gw != nil {
		s += " via " + r.Gw.String()
	}
	if r.Via != nil {
		s += " via " + r.Via.String()
	}
	if r.LinkIndex != 0 {
		s += " dev " + linkName(links, r.LinkIndex)
	}
	if r.Src != nil {
		s += " src " + r.Src.String()
	}
	s += fmt.Sprintf(" proto %s scope %s metric %d", r.Protocol, r.Scope, r.Priority)
	if r.Tos != 0 {
		s += fmt.Sprintf(" tos %#x", r.Tos)
	}
	if r.MTU != 0 {
		s += fmt.Sprintf(" mtu %d", r.MTU)
	}
	if r.Flags != 0 {
		s += fmt.Sprintf(" flags %#x", r.Flags)
	}
	for _, nh := range r.MultiPath {
		s += " nexthop"
		if nh.Gw != nil {
			s += " via " + nh.Gw.String()
		}
		s += fmt.Sprintf(" dev %s weight %d", linkName(links, nh.LinkIndex), nh.Hops+1)
	}
	if r.Encap != nil {
		s += " encap " + r.Encap.String()
	}
	return s
}

// FormatRule prints a policy rule as "inet pref N [not] [from S] [to D] ... lookup T";
// the priority is zero-padded so that sorted lines keep the kernel's order.
func FormatRule(r netlink.Rule) string {
	s := fmt.Sprintf("%s pref %05d", familyName(r.Family), r.Priority)
	if r.Invert {
		s += " not"
	}
	if r.Src != nil {
		s += " from " + r.Src.String()
	} else {
		s += " from all"
	}
	if r.Dst != nil {
		s += " to " + r.Dst.String()
	}
	if r.IifName != "" {
		s += " iif " + r.IifName
	}
	if r.OifName != "" {
		s += " oif " + r.OifName
	}
	if r.Mark != 0 || r.Mask != nil {
		s += fmt.Sprintf(" fwmark %#x", r.Mark)
		if r.Mask != nil {
			s += fmt.Sprintf("/%#x", *r.Mask)
		}
	}
	if r.Tos != 0 {
		s += fmt.Sprintf(" tos %#x", r.Tos)
	}
	if r.IPProto != 0 {
		s += fmt.Sprintf(" ipproto %d", r.IPProto)
	}
	if r.Sport != nil {
		s += fmt.Sprintf(" sport %d-%d", r.Sport.Start, r.Sport.End)
	}
	if r.Dport != nil {
		s += fmt.Sprintf(" dport %d-%d", r.Dport.Start, r.Dport.End)
	}
	if r.UIDRange != nil {
		s += fmt.Sprintf(" uidrange %d-%d", r.UIDRange.Start, r.UIDRange.End)
	}
	if r.TunID != 0 {
		s += fmt.Sprintf(" tun_id %d", r.TunID)
	}
	if r.Flow > 0 {
		s += fmt.Sprintf(" realms %d", r.Flow)
	}
	// netlink leaves -1 for what the kernel did not send; 0 is a value.
	if r.SuppressPrefixlen >= 0 {
		s += fmt.Sprintf(" suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	if r.SuppressIfgroup >= 0 {
		s += fmt.Sprintf(" suppress_ifgroup %d", r.SuppressIfgroup)
	}
	if r.Goto > 0 {
		s += fmt.Sprintf(" goto %d", r.Goto)
	} else {
		s += " lookup " + tableName(r.Table)
	}
	if r.Protocol != 0 {
		s += fmt.Sprintf(" proto %d", r.Protocol)
	}
	return s
}
