package apply

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Firewall marks on a real kernel, in two throwaway network namespaces joined
// by a veth pair; nothing is bound under /run/netns, so the namespaces vanish
// with the test process whatever happens to it:
//
//	+--------- director ----------+          +------- client -------+
//	| eth1 192.0.2.1/24 (the VIP) |  veth    | eth1 192.0.2.2/24    |
//	|      192.0.2.3/24 (another) |----------|      2001:db8::2/64  |
//	|      2001:db8::1/64         |          +----------------------+
//	| marks: lvslab's backend     |
//	| counters: the test's own    |
//	+-----------------------------+
//
// The client sends to the VIP's marked ports and to others; counter rules of the
// test's own, after lvslab's at prerouting, count every probe's packets and
// those carrying the expected mark (or, for probes that must stay unmarked, any
// mark). Then the marks are edited and removed through apply, and nothing of
// lvslab's may be left.
//
// make hostnft runs it on the host's kernel with LVSLAB_REQUIRE_MARKS=nftables,
// make privileged in the sandbox kernel with LVSLAB_REQUIRE_MARKS=iptables-legacy:
// then it fails, rather than skips, when it cannot run or the kernel gets the
// other backend.

// envRequireMarks names the backend the kernel must get ("nftables" or
// "iptables-legacy"); set, the test fails instead of skipping.
const envRequireMarks = "LVSLAB_REQUIRE_MARKS"

func marksKernel(t *testing.T) (require string) {
	t.Helper()
	require = os.Getenv(envRequireMarks)
	skip := t.Skip
	if require != "" {
		skip = t.Fatal
		if require != "nftables" && require != "iptables-legacy" {
			t.Fatalf("%s=%q: want nftables or iptables-legacy", envRequireMarks, require)
		}
	}
	if testing.Short() {
		skip("creates namespaces and firewall rules: runs without -short, as root (make hostnft, make privileged)")
	}
	if os.Getuid() != 0 {
		skip("needs root to create network namespaces")
	}
	return require
}

// throwawayNetns makes a network namespace that no path names: the node's
// NSPath is the test process's descriptor of it, closed at cleanup.
func throwawayNetns(t *testing.T, name string) (node.Node, netns.NsHandle) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.New() // unshares this thread into the new namespace
	if rerr := netns.Set(orig); rerr != nil {
		// Leave the thread locked: the runtime ends it with this goroutine.
		t.Fatalf("restore namespace: %v", rerr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return node.Node{Name: name, NSPath: fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns))}, ns
}

// markLab is the two namespaces, up and addressed.
type markLab struct {
	director, client node.Node
	vip, other, vip6 netip.Addr
}

func newMarkLab(t *testing.T) *markLab {
	t.Helper()
	l := &markLab{vip: netip.MustParseAddr("192.0.2.1"), other: netip.MustParseAddr("192.0.2.3"), vip6: netip.MustParseAddr("2001:db8::1")}
	var dirNS, cliNS netns.NsHandle
	l.director, dirNS = throwawayNetns(t, "director")
	l.client, cliNS = throwawayNetns(t, "client")
	dh, err := netlink.NewHandleAt(dirNS, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer dh.Close()
	ch, err := netlink.NewHandleAt(cliNS, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "eth1", PeerNamespace: netlink.NsFd(cliNS)}
	if err := dh.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	for _, side := range []struct {
		h     *netlink.Handle
		addrs []string
	}{
		{dh, []string{"192.0.2.1/24", "192.0.2.3/24", "2001:db8::1/64"}},
		{ch, []string{"192.0.2.2/24", "2001:db8::2/64"}},
	} {
		for _, dev := range []string{"lo", "eth1"} {
			link, err := side.h.LinkByName(dev)
			if err != nil {
				t.Fatal(err)
			}
			if dev == "eth1" {
				for _, a := range side.addrs {
					addr := &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix(a)), Flags: unix.IFA_F_NODAD}
					if err := side.h.AddrAdd(link, addr); err != nil {
						t.Fatalf("address %s: %v", a, err)
					}
				}
			}
			if err := side.h.LinkSetUp(link); err != nil {
				t.Fatal(err)
			}
		}
	}
	return l
}

// probe is traffic the client sends, and the mark it must arrive with (0: none).
type probe struct {
	proto lab.Protocol
	dst   netip.AddrPort
	mark  uint32
}

func (p probe) String() string { return fmt.Sprintf("%s %s (mark %d)", p.proto, p.dst, p.mark) }

// send sends n packets of p from the client: n TCP connection attempts that
// the director refuses (one SYN each), or n UDP datagrams.
func (l *markLab) send(t *testing.T, p probe, n int) {
	t.Helper()
	err := l.client.Do(func() error {
		for range n {
			c, err := net.DialTimeout(string(p.proto), p.dst.String(), 3*time.Second)
			if p.proto == lab.TCP {
				if err == nil {
					c.Close()
					return errors.New("connected: something listens")
				}
				if !errors.Is(err, syscall.ECONNREFUSED) {
					return err
				}
				continue
			}
			if err != nil {
				return err
			}
			_, err = c.Write([]byte("x"))
			c.Close()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send %s: %v", p, err)
	}
}

// counters counts, per probe, all of its packets at prerouting after lvslab's
// marks, and those with the probe's mark (for a probe with mark 0: with any
// mark).
type counters interface {
	install(probes []probe) error
	// counts returns, per probe, [all, marked].
	counts() ([][2]uint64, error)
}

// nftCounters keeps its counter rules in a table of the test's own, "lvslabtest",
// at priority mangle + 10.
type nftCounters struct {
	conn   *nftables.Conn
	probes []probe
}

const testTable = "lvslabtest"

func newNftCounters(t *testing.T, director netns.NsHandle) *nftCounters {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(int(director)), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseLasting() })
	return &nftCounters{conn: conn}
}

func (c *nftCounters) chain(f nftables.TableFamily) *nftables.Chain {
	return &nftables.Chain{Name: "count", Table: &nftables.Table{Name: testTable, Family: f}, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityMangle + 10)}
}

func (c *nftCounters) install(probes []probe) error {
	c.probes = probes
	for _, f := range nftFamilies {
		c.conn.AddTable(&nftables.Table{Name: testTable, Family: f})
		c.conn.AddChain(c.chain(f))
	}
	for _, p := range probes {
		ch := c.chain(nftFamily(p.dst.Addr()))
		off, n := daddrField(ch.Table.Family)
		match := []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.dst.Addr().AsSlice()},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(p.proto.Number())}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p.dst.Port())},
		}
		op := expr.CmpOpEq
		if p.mark == 0 {
			op = expr.CmpOpNeq
		}
		marked := append(slices.Clone(match),
			&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
			&expr.Cmp{Op: op, Register: 1, Data: binaryutil.NativeEndian.PutUint32(p.mark)},
			&expr.Counter{})
		c.conn.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: append(match, &expr.Counter{})})
		c.conn.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: marked})
	}
	return c.conn.Flush()
}

func (c *nftCounters) counts() ([][2]uint64, error) {
	byFam := map[nftables.TableFamily][]uint64{}
	for _, f := range nftFamilies {
		ch := c.chain(f)
		rules, err := c.conn.GetRules(ch.Table, ch)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			cnt, ok := r.Exprs[len(r.Exprs)-1].(*expr.Counter)
			if !ok {
				return nil, fmt.Errorf("rule %d has no counter", r.Handle)
			}
			byFam[f] = append(byFam[f], cnt.Packets)
		}
	}
	out := make([][2]uint64, len(c.probes))
	next := map[nftables.TableFamily]int{}
	for i, p := range c.probes {
		f := nftFamily(p.dst.Addr())
		k := next[f]
		if k+1 >= len(byFam[f]) {
			return nil, fmt.Errorf("%d counters in family %s", len(byFam[f]), familyName(f))
		}
		out[i] = [2]uint64{byFam[f][k], byFam[f][k+1]}
		next[f] = k + 2
	}
	return out, nil
}

// tablesNamed lists the families that hold a table named name.
func tablesNamed(t *testing.T, conn *nftables.Conn, name string) []string {
	t.Helper()
	var out []string
	for _, f := range nftFamilies {
		tables, err := conn.ListTablesOfFamily(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range tables {
			if x.Name == name {
				out = append(out, familyName(f)+" "+name)
			}
		}
	}
	return out
}

// xtCounters keeps its counter rules at the end of legacy iptables' mangle
// PREROUTING, after the jump to lvslab's chain.
type xtCounters struct {
	node   node.Node
	ipt    [2]*iptables.IPTables
	first  [2]int // the index of the first counter rule in PREROUTING's listing
	probes []probe
}

func newXtCounters(t *testing.T, director node.Node) *xtCounters {
	t.Helper()
	c := &xtCounters{node: director}
	for i, path := range []string{IptablesLegacy, Ip6tablesLegacy} {
		ipt, err := iptables.New(iptables.IPFamily(iptables.Protocol(i)), iptables.Path(path))
		if err != nil {
			t.Fatal(err)
		}
		c.ipt[i] = ipt
	}
	return c
}

func six(a netip.Addr) int {
	if a.Is6() {
		return 1
	}
	return 0
}

// rules lists the family's PREROUTING rules with their counters, as
// iptables -v -S prints them, but for the jump to lvslab's chain.
func (c *xtCounters) rules(ipt *iptables.IPTables) ([]string, error) {
	all, err := ipt.ListWithCounters("mangle", "PREROUTING")
	var rules []string
	for _, r := range all {
		if strings.HasPrefix(r, "-A ") && !strings.Contains(r, "-j "+MarkChain) {
			rules = append(rules, r)
		}
	}
	return rules, err
}

// install appends the counter rules with one iptables-legacy-restore per
// family (a process costs the sandbox kernel a quarter of a second).
func (c *xtCounters) install(probes []probe) error {
	c.probes = probes
	var script [2]strings.Builder
	for i := range script {
		script[i].WriteString("*mangle\n")
	}
	for _, p := range probes {
		match := fmt.Sprintf("-A PREROUTING -d %s -p %s -m multiport --dports %d",
			netip.PrefixFrom(p.dst.Addr(), p.dst.Addr().BitLen()), p.proto, p.dst.Port())
		marked := fmt.Sprintf("%s -m mark --mark %d", match, p.mark)
		if p.mark == 0 {
			marked = match + " -m mark ! --mark 0"
		}
		fmt.Fprintf(&script[six(p.dst.Addr())], "%s\n%s\n", match, marked)
	}
	return c.node.Do(func() error {
		for i, ipt := range c.ipt {
			rules, err := c.rules(ipt)
			if err != nil {
				return err
			}
			c.first[i] = len(rules)
			script[i].WriteString("COMMIT\n")
			restore := []string{IptablesLegacy + "-restore", Ip6tablesLegacy + "-restore"}[i]
			cmd := exec.Command(restore, "--noflush")
			cmd.Stdin = strings.NewReader(script[i].String())
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %w: %s", restore, err, out)
			}
		}
		return nil
	})
}

func (c *xtCounters) counts() ([][2]uint64, error) {
	var rules [2][]string
	err := c.node.Do(func() error {
		for i, ipt := range c.ipt {
			r, err := c.rules(ipt)
			if err != nil {
				return err
			}
			rules[i] = r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	packets := func(rule string) (uint64, error) {
		f := strings.Fields(rule)
		i := slices.Index(f, "-c")
		if i < 0 || i+1 >= len(f) {
			return 0, fmt.Errorf("no counter in %q", rule)
		}
		return strconv.ParseUint(f[i+1], 10, 64)
	}
	out := make([][2]uint64, len(c.probes))
	next := c.first
	for i, p := range c.probes {
		f := six(p.dst.Addr())
		k := next[f]
		if k+1 >= len(rules[f]) {
			return nil, fmt.Errorf("%d rules in PREROUTING", len(rules[f]))
		}
		for j := range 2 {
			n, err := packets(rules[f][k+j])
			if err != nil {
				return nil, err
			}
			out[i][j] = n
		}
		next[f] = k + 2
	}
	return out, nil
}

// xtLeft lists what of lvslab's chains is left in the node's legacy mangle
// tables.
func xtLeft(t *testing.T, n node.Node) []string {
	t.Helper()
	b, err := newIptablesMarks(n)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, f := range b.fams {
		has, err := b.hasMangle(f)
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			continue
		}
		err = b.do(f, "list", func(ipt *iptables.IPTables) error {
			rules, err := ipt.List("mangle", "PREROUTING")
			for _, r := range rules {
				if strings.Contains(r, MarkChain) {
					left = append(left, f.String()+": "+r)
				}
			}
			if err != nil {
				return err
			}
			if exists, err := ipt.ChainExists("mangle", MarkChain); err != nil || exists {
				left = append(left, f.String()+": the chain")
				return err
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return left
}

func TestMarksOnKernel(t *testing.T) {
	require := marksKernel(t)
	l := newMarkLab(t)
	auto, err := openMarkBackend(t.Context(), l.director)
	if err != nil {
		t.Fatal(err)
	}
	auto.Close()
	kind := "iptables-legacy"
	if _, ok := auto.(*nftMarks); ok {
		kind = "nftables"
	}
	t.Logf("the kernel's backend: %s", auto)
	if require != "" && kind != require {
		t.Fatalf("%s=%s, but the kernel got %s", envRequireMarks, require, auto)
	}
	t.Run(kind, func(t *testing.T) { exerciseMarks(t, kind, nil) })
	if kind == "nftables" {
		// The same behaviour from legacy iptables, on a kernel that has both
		// (checked with nftables' counters, which see marks from either).
		t.Run("iptables-legacy forced", func(t *testing.T) {
			if _, err := os.Stat(IptablesLegacy); err != nil {
				t.Skip(err)
			}
			exerciseMarks(t, "nftables", func(n node.Node) markBackend {
				b, err := newIptablesMarks(n)
				if err != nil {
					t.Fatal(err)
				}
				return b
			})
		})
	}
}

// exerciseMarks builds a fresh markLab and runs the marks through apply with the
// kernel's backend (or force's), proving them with counters of the kind named.
func exerciseMarks(t *testing.T, counterKind string, force func(node.Node) markBackend) {
	ctx := t.Context()
	l := newMarkLab(t)
	h := Open(map[string]node.Node{"director": l.director})
	defer h.Close()
	if force != nil {
		b := force(l.director)
		h.sessions["director"] = &session{node: l.director, marks: b}
	}
	tcp10 := lab.Mark{Protocol: lab.TCP, Destination: l.vip, Ports: []uint16{443, 80}, Mark: 10}
	udp20 := lab.Mark{Protocol: lab.UDP, Destination: l.vip, Ports: []uint16{53}, Mark: 20}
	tcp30 := lab.Mark{Protocol: lab.TCP, Destination: l.vip6, Ports: []uint16{80, 443}, Mark: 30}
	spec := func(marks ...lab.Mark) lab.Spec {
		return lab.Spec{Nodes: []lab.NodeSpec{{Name: "director", Marks: marks}}}
	}
	step := func(desired, previous lab.Spec, want int) {
		t.Helper()
		changes, err := h.Apply(ctx, desired, &previous)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range changes {
			t.Log(c)
		}
		if len(changes) != want {
			t.Errorf("%d changes, want %d", len(changes), want)
		}
		again, err := h.Diff(ctx, desired, &previous)
		if err != nil || len(again) > 0 {
			t.Fatalf("read back: %v %v", again, err)
		}
	}

	full := spec(tcp30, tcp10, udp20) // IPv6 first: each family keeps its own order
	step(full, spec(), 3)
	backend := h.sessions["director"].marks
	got, err := backend.Read(ctx)
	if err != nil || len(got) != 3 || !sameMark(got[0], tcp10) || !sameMark(got[1], udp20) || !sameMark(got[2], tcp30) {
		t.Fatalf("%s holds %v, %v", backend, got, err)
	}

	vip := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(l.vip, port) }
	vip6 := func(port uint16) netip.AddrPort { return netip.AddrPortFrom(l.vip6, port) }
	probes := []probe{
		{lab.TCP, vip(80), 10}, {lab.TCP, vip(443), 10}, {lab.TCP, vip(8080), 0},
		{lab.TCP, netip.AddrPortFrom(l.other, 80), 0}, // another address of the director
		{lab.UDP, vip(53), 20}, {lab.UDP, vip(80), 0}, // UDP to a TCP mark's port
		{lab.TCP, vip6(443), 30}, {lab.TCP, vip6(80), 30}, {lab.TCP, vip6(8080), 0}, {lab.UDP, vip6(443), 0},
	}
	var cnt counters
	if counterKind == "nftables" {
		cnt = newNftCounters(t, netnsOf(t, l.director))
	} else {
		cnt = newXtCounters(t, l.director)
	}
	if err := cnt.install(probes); err != nil {
		t.Fatalf("counters: %v", err)
	}
	const n = 3
	for _, p := range probes {
		l.send(t, p, n)
	}
	var counts [][2]uint64
	deadline := time.Now().Add(10 * time.Second)
	for { // datagrams sent while the neighbour is resolved may arrive a moment later
		if counts, err = cnt.counts(); err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(counts, func(c [2]uint64) bool { return c[0] < n }) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, p := range probes {
		all, marked := counts[i][0], counts[i][1]
		wantMarked := uint64(n)
		if p.mark == 0 {
			wantMarked = 0
		}
		if all != n || marked != wantMarked {
			t.Errorf("%s: %d packets arrived, %d of them marked as expected (want %d, %d)", p, all, marked, n, wantMarked)
		} else {
			t.Logf("%s: %d packets, %d marked", p, all, marked)
		}
	}

	// A rule lvslab does not write, in lvslab's own table or chain: apply
	// rewrites it whole.
	if b, ok := backend.(*nftMarks); ok {
		ch := nftChain(nftTable(nftables.TableFamilyIPv4))
		b.conn.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
		if err := b.conn.Flush(); err != nil {
			t.Fatal(err)
		}
	} else {
		b := backend.(*iptablesMarks)
		if err := b.do(b.fams[0], "append", func(ipt *iptables.IPTables) error {
			return ipt.Append("mangle", MarkChain, "-j", "ACCEPT")
		}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := backend.Read(ctx); !errors.Is(err, errForeignRule) {
		t.Fatalf("a foreign rule read as %v", err)
	}
	step(full, full, 4) // delete all, add three

	// Edits: one mark goes, then all.
	step(spec(tcp10, tcp30), full, 1)
	step(spec(), spec(tcp10, tcp30), 2)
	if got, err := backend.Read(ctx); err != nil || len(got) > 0 {
		t.Errorf("after removal: %v %v", got, err)
	}
	step(spec(), spec(tcp10, tcp30), 0) // teardown again: nothing to do

	// Nothing of lvslab's is left, and the test's own counters are untouched.
	if left := xtLeft(t, l.director); len(left) > 0 {
		t.Errorf("left in legacy iptables: %q", left)
	}
	if nft, ok, err := openNftMarks(l.director); err != nil {
		t.Fatal(err)
	} else if ok {
		defer nft.Close()
		if left := tablesNamed(t, nft.conn, NftTable); len(left) > 0 {
			t.Errorf("left in nftables: %q", left)
		}
		if counterKind == "nftables" {
			if kept := tablesNamed(t, nft.conn, testTable); len(kept) != 2 {
				t.Errorf("the test's own tables: %q", kept)
			}
		}
	}
	if after, err := cnt.counts(); err != nil || !slices.Equal(after, counts) {
		t.Errorf("the test's counters after removal: %v %v (were %v)", after, err, counts)
	}
}

// netnsOf opens n's namespace for the test.
func netnsOf(t *testing.T, n node.Node) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}
