package main

import (
	"bytes"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestWriteSortsOnlySortedSections(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, []Section{
		{Name: "routes", Sorted: true, Lines: []string{"b", "a", "c", "a"}},
		{Name: "iptables -S", Lines: []string{"-P INPUT ACCEPT", "-A INPUT -j B", "-A INPUT -j A"}},
		{Name: "/run/netns", Sorted: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `== routes
a
b
c
== iptables -S
-P INPUT ACCEPT
-A INPUT -j B
-A INPUT -j A
== /run/netns
(none)
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLines(t *testing.T) {
	got := Lines("table ip t {\r\n\tchain c {  \n\n\t}\n}\n")
	want := []string{"table ip t {", "\tchain c {", "\t}", "}"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestSysctls(t *testing.T) {
	if got := SysctlLine("ipv4/ip_local_port_range", "32768\t60999\n"); got != "net/ipv4/ip_local_port_range=32768 60999" {
		t.Errorf("multi-valued sysctl: %q", got)
	}
	if got := SysctlLine("ipv4/ip_forward", "0\n"); got != "net/ipv4/ip_forward=0" {
		t.Errorf("sysctl: %q", got)
	}
	for rel, excluded := range map[string]bool{
		"netfilter/nf_conntrack_count": true,
		"netfilter/nf_conntrack_max":   false,
		"ipv4/tcp_fastopen_key":        true,
		"core/netdev_rss_key":          true,
		"ipv4/route/gc_timeout":        false,
		"ipv4/conf/all/forwarding":     false,
	} {
		if reason, got := ExcludedSysctl(rel); got != excluded || (got && reason == "") {
			t.Errorf("ExcludedSysctl(%s) = %v %q, want %v with a reason", rel, got, reason, excluded)
		}
	}
}

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	n.IP = ip
	return n
}

func TestFormatAddr(t *testing.T) {
	links := map[int]string{1: "lo", 2: "eth0"}
	for _, c := range []struct {
		a    netlink.Addr
		want string
	}{
		{netlink.Addr{IPNet: cidr("192.0.2.2/24"), LinkIndex: 2, Scope: unix.RT_SCOPE_UNIVERSE,
			Broadcast: net.ParseIP("192.0.2.255"), Label: "eth0", Flags: unix.IFA_F_PERMANENT,
			ValidLft: 100, PreferedLft: 50},
			"eth0 inet 192.0.2.2/24 scope universe brd 192.0.2.255 permanent"},
		{netlink.Addr{IPNet: cidr("fe80::1/64"), LinkIndex: 7, Scope: unix.RT_SCOPE_LINK,
			Flags: unix.IFA_F_TENTATIVE | unix.IFA_F_NODAD},
			"if7 inet6 fe80::1/64 scope link nodad"},
		{netlink.Addr{IPNet: cidr("203.0.113.1/32"), LinkIndex: 1, Scope: unix.RT_SCOPE_HOST, Label: "lo:vip"},
			"lo inet 203.0.113.1/32 scope host label lo:vip"},
	} {
		if got := FormatAddr(c.a, links); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

func TestFormatLink(t *testing.T) {
	links := map[int]string{1: "lo", 2: "eth0", 3: "br0"}
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", MTU: 1500, Flags: net.FlagUp, MasterIndex: 3}}
	if got := FormatLink(l, links); got != "veth0 veth mtu 1500 up master br0" {
		t.Errorf("got %q", got)
	}
}

func TestFormatRoute(t *testing.T) {
	links := map[int]string{2: "eth0"}
	for _, c := range []struct {
		r    netlink.Route
		want string
	}{
		{netlink.Route{Family: netlink.FAMILY_V4, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
			Gw: net.ParseIP("192.0.2.1"), LinkIndex: 2, Protocol: unix.RTPROT_BOOT},
			"table main inet unicast default via 192.0.2.1 dev eth0 proto boot scope universe metric 0"},
		{netlink.Route{Family: netlink.FAMILY_V6, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST,
			Dst: cidr("::/0"), Gw: net.ParseIP("fd00::1"), LinkIndex: 2, Protocol: unix.RTPROT_RA, Priority: 1024},
			"table main inet6 unicast default via fd00::1 dev eth0 proto ra scope universe metric 1024"},
		{netlink.Route{Family: netlink.FAMILY_V4, Table: 100, Type: unix.RTN_BLACKHOLE,
			Dst: cidr("198.51.100.0/24"), Protocol: unix.RTPROT_STATIC},
			"table 100 inet blackhole 198.51.100.0/24 proto static scope universe metric 0"},
		{netlink.Route{Family: netlink.FAMILY_V4, Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL,
			Dst: cidr("192.0.2.2/32"), Src: net.ParseIP("192.0.2.2"), LinkIndex: 2,
			Protocol: unix.RTPROT_KERNEL, Scope: netlink.SCOPE_HOST},
			"table local inet local 192.0.2.2/32 dev eth0 src 192.0.2.2 proto kernel scope host metric 0"},
	} {
		if got := FormatRoute(c.r, links); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

func TestFormatRule(t *testing.T) {
	mask := uint32(0xff)
	r := *netlink.NewRule()
	r.Family, r.Priority, r.Table = netlink.FAMILY_V4, 100, 10
	r.Mark, r.Mask = 10, &mask
	r.Src = cidr("203.0.113.0/24")
	if got := FormatRule(r); got != "inet pref 00100 from 203.0.113.0/24 fwmark 0xa/0xff lookup 10" {
		t.Errorf("got %q", got)
	}
	d := *netlink.NewRule()
	d.Family, d.Priority, d.Table, d.SuppressPrefixlen = netlink.FAMILY_V6, 32766, unix.RT_TABLE_MAIN, 0
	if got := FormatRule(d); got != "inet6 pref 32766 from all suppress_prefixlength 0 lookup main" {
		t.Errorf("got %q", got)
	}
	// Zero-padded priorities sort as the kernel orders the rules: 100 before 32766.
	d.Family = netlink.FAMILY_V4
	if a, b := FormatRule(r), FormatRule(d); !(a < b) {
		t.Errorf("%q sorts after %q", a, b)
	}
}
