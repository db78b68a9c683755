package apply

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// Encoding and decoding of marks for both backends, and the plan over a fake
// backend: none of it needs a kernel.

var testMarks = []lab.Mark{
	{Protocol: lab.TCP, Destination: netip.MustParseAddr("203.0.113.1"), Ports: []uint16{80, 443}, Mark: 10},
	{Protocol: lab.TCP, Destination: netip.MustParseAddr("203.0.113.1"), Ports: []uint16{8080}, Mark: 1},
	{Protocol: lab.UDP, Destination: netip.MustParseAddr("198.51.100.7"), Ports: []uint16{53, 5353, 53, 123}, Mark: 4294967295},
	{Protocol: lab.TCP, Destination: netip.MustParseAddr("2001:db8::1"), Ports: []uint16{443, 80}, Mark: 0x10000},
	{Protocol: lab.UDP, Destination: netip.MustParseAddr("2001:db8::1"), Ports: []uint16{4789}, Mark: 7},
}

// wire passes each expression through the netlink encoding the kernel reads
// and dumps (GetRules decodes rules the same way).
func wire(t *testing.T, fam nftables.TableFamily, exprs []expr.Any) []expr.Any {
	t.Helper()
	out := make([]expr.Any, len(exprs))
	for i, e := range exprs {
		data, err := expr.MarshalExprData(byte(fam), e)
		if err != nil {
			t.Fatalf("marshal %T: %v", e, err)
		}
		fresh := reflect.New(reflect.TypeOf(e).Elem()).Interface().(expr.Any)
		if err := expr.Unmarshal(byte(fam), data, fresh); err != nil {
			t.Fatalf("unmarshal %T: %v", e, err)
		}
		out[i] = fresh
	}
	return out
}

// portsSet is the anonymous set a rule of m looks up (nil for one port).
func portsSet(m lab.Mark) *nftables.Set {
	if len(markPorts(m.Ports)) < 2 {
		return nil
	}
	return &nftables.Set{Name: "__set%d", ID: 7, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
}

func TestNftMarkEncoding(t *testing.T) {
	reg := uint32(1)
	for _, c := range []struct {
		mark lab.Mark
		want []expr.Any
	}{{
		testMarks[0], // ip daddr 203.0.113.1 tcp dport { 80, 443 } meta mark set 0x0000000a
		[]expr.Any{
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{203, 0, 113, 1}},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{6}},
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: reg, SetName: "__set%d", SetID: 7},
			&expr.Immediate{Register: reg, Data: binaryutil.NativeEndian.PutUint32(10)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg},
		},
	}, {
		testMarks[4], // ip6 daddr 2001:db8::1 udp dport 4789 meta mark set 0x00000007
		[]expr.Any{
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: netip.MustParseAddr("2001:db8::1").AsSlice()},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{17}},
			&expr.Payload{DestRegister: reg, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg, Data: []byte{0x12, 0xb5}},
			&expr.Immediate{Register: reg, Data: binaryutil.NativeEndian.PutUint32(7)},
			&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: reg},
		},
	}} {
		got, err := markExprs(c.mark, portsSet(c.mark))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %s\nwant %s", markObject(c.mark), dumpExprs(got), dumpExprs(c.want))
		}
	}
	if _, err := markExprs(testMarks[0], nil); err == nil {
		t.Error("two ports encoded without a set")
	}
	if _, err := markExprs(lab.Mark{Protocol: "sctp", Destination: testMarks[0].Destination, Ports: []uint16{1}, Mark: 1}, nil); err == nil {
		t.Error("sctp encoded")
	}
}

func dumpExprs(exprs []expr.Any) string {
	var b strings.Builder
	for _, e := range exprs {
		fmt.Fprintf(&b, "\n  %T%+v", e, e)
	}
	return b.String()
}

func TestNftMarkRoundTrip(t *testing.T) {
	for _, m := range testMarks {
		t.Run(markObject(m), func(t *testing.T) {
			fam := nftFamily(m.Destination)
			set := portsSet(m)
			exprs, err := markExprs(m, set)
			if err != nil {
				t.Fatal(err)
			}
			lookups := 0
			setPorts := func(name string) ([]uint16, error) {
				lookups++
				if set == nil || name != set.Name {
					t.Fatalf("lookup of set %q", name)
				}
				p := markPorts(m.Ports)
				slices.Reverse(p) // a set lists its elements in the kernel's order
				return p, nil
			}
			got, err := markFromExprs(fam, wire(t, fam, exprs), setPorts)
			if err != nil {
				t.Fatal(err)
			}
			if !sameMark(got, m) || !slices.Equal(got.Ports, markPorts(m.Ports)) {
				t.Errorf("read back %+v, wrote %+v", got, m)
			}
			if (set != nil) != (lookups == 1) {
				t.Errorf("%d set lookups", lookups)
			}
		})
	}
}

func TestNftForeignRules(t *testing.T) {
	m := testMarks[1]
	base, err := markExprs(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	noSet := func(string) ([]uint16, error) { t.Fatal("set lookup"); return nil, nil }
	edit := func(f func([]expr.Any) []expr.Any) []expr.Any {
		return f(wire(t, nftables.TableFamilyIPv4, base))
	}
	for name, exprs := range map[string][]expr.Any{
		"counter":   edit(func(e []expr.Any) []expr.Any { return append(e, &expr.Counter{}) }),
		"verdict":   edit(func(e []expr.Any) []expr.Any { return append(e, &expr.Verdict{Kind: expr.VerdictAccept}) }),
		"no mark":   edit(func(e []expr.Any) []expr.Any { return e[:6] }),
		"no port":   edit(func(e []expr.Any) []expr.Any { return append(e[:4:4], e[6:]...) }),
		"daddr !=":  edit(func(e []expr.Any) []expr.Any { e[1].(*expr.Cmp).Op = expr.CmpOpNeq; return e }),
		"saddr":     edit(func(e []expr.Any) []expr.Any { e[0].(*expr.Payload).Offset = 12; return e }),
		"proto 132": edit(func(e []expr.Any) []expr.Any { e[3].(*expr.Cmp).Data = []byte{132}; return e }),
		"two marks": edit(func(e []expr.Any) []expr.Any { return append(e, e[6:]...) }),
		"set reg 2": edit(func(e []expr.Any) []expr.Any { e[7].(*expr.Meta).Register = 2; return e }),
		"lookup !=": edit(func(e []expr.Any) []expr.Any {
			e[5] = &expr.Lookup{SourceRegister: 1, SetName: "__set0", Invert: true}
			return e
		}),
	} {
		if got, err := markFromExprs(nftables.TableFamilyIPv4, exprs, noSet); !errors.Is(err, errForeignRule) {
			t.Errorf("%s: read as %+v, %v", name, got, err)
		}
	}
	// An IPv4 rule in the ip6 table is not one lvslab writes either.
	if got, err := markFromExprs(nftables.TableFamilyIPv6, wire(t, nftables.TableFamilyIPv6, base), noSet); !errors.Is(err, errForeignRule) {
		t.Errorf("ip rule in ip6: read as %+v, %v", got, err)
	}
}

// listed is a rule as iptables -S lists what ruleSpec wrote.
func listed(t *testing.T, m lab.Mark) string {
	t.Helper()
	spec, err := ruleSpec(m)
	if err != nil {
		t.Fatal(err)
	}
	s := "-A " + MarkChain + " " + strings.Join(spec, " ")
	return strings.Replace(s, fmt.Sprintf("--set-mark %d", m.Mark), fmt.Sprintf("--set-xmark %#x/0xffffffff", m.Mark), 1)
}

func TestIptablesMarkRoundTrip(t *testing.T) {
	spec, err := ruleSpec(testMarks[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(spec, " "), "-d 203.0.113.1/32 -p tcp -m multiport --dports 80,443 -j MARK --set-mark 10"; got != want {
		t.Errorf("rule %q, want %q", got, want)
	}
	// As iptables-legacy 1.8.9 listed it.
	got, err := parseMarkRule("-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0xa/0xffffffff")
	if err != nil || !reflect.DeepEqual(got, testMarks[0]) {
		t.Errorf("parsed %+v, %v", got, err)
	}
	for _, m := range testMarks {
		got, err := parseMarkRule(listed(t, m))
		if err != nil || !sameMark(got, m) || !slices.Equal(got.Ports, markPorts(m.Ports)) {
			t.Errorf("%s: read back %+v, %v", listed(t, m), got, err)
		}
	}
	for _, r := range []string{
		"-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80 -j ACCEPT",
		"-A LVSLAB-MARKS -d 203.0.113.0/24 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0xa/0xffffffff",
		"-A LVSLAB-MARKS -s 10.0.0.1/32 -d 203.0.113.1/32 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0xa/0xffffffff",
		"-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0xa/0xff",
		"-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80:90 -j MARK --set-xmark 0xa/0xffffffff",
		"-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0xa/0xffffffff -m comment --comment x",
		"-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80",
		"-A PREROUTING -d 203.0.113.1/32 -p tcp -m multiport --dports 80 -j MARK --set-xmark 0xa/0xffffffff",
	} {
		if got, err := parseMarkRule(r); !errors.Is(err, errForeignRule) {
			t.Errorf("%s: read as %+v, %v", r, got, err)
		}
	}
}

// fakeMarks is a markBackend over a list.
type fakeMarks struct {
	marks   []lab.Mark
	foreign bool
	reads   int
}

func (f *fakeMarks) Read(context.Context) ([]lab.Mark, error) {
	f.reads++
	if f.foreign {
		return nil, fmt.Errorf("rule 3: %w", errForeignRule)
	}
	return byFamily(f.marks), nil
}

func (f *fakeMarks) Add(_ context.Context, m lab.Mark) error {
	f.marks = append(f.marks, m)
	return nil
}

func (f *fakeMarks) Delete(_ context.Context, m lab.Mark) error {
	for i := len(f.marks) - 1; i >= 0; i-- {
		if sameMark(f.marks[i], m) {
			f.marks = slices.Delete(f.marks, i, i+1)
			return nil
		}
	}
	return nil
}

func (f *fakeMarks) Remove(context.Context) error { f.marks, f.foreign = nil, false; return nil }
func (f *fakeMarks) String() string               { return "fake" }
func (f *fakeMarks) Close() error                 { return nil }

func TestDiffMarks(t *testing.T) {
	a, b, c, six := testMarks[0], testMarks[1], testMarks[2], testMarks[3]
	aReordered := a
	aReordered.Ports = []uint16{443, 80, 443}
	for _, tc := range []struct {
		name      string
		have      []lab.Mark
		foreign   bool
		want, old []lab.Mark
		plan      []string
	}{
		{name: "none ever", plan: nil},
		{name: "fresh", want: []lab.Mark{a, b}, plan: []string{"add " + markObject(a), "add " + markObject(b)}},
		{name: "same", have: []lab.Mark{a, b}, want: []lab.Mark{a, b}},
		{name: "ports in another order", have: []lab.Mark{a}, want: []lab.Mark{aReordered}},
		{name: "families each in order", have: []lab.Mark{a, six, b}, want: []lab.Mark{six, a, b}},
		{name: "one out of place", have: []lab.Mark{a, c, b}, want: []lab.Mark{a, b},
			plan: []string{"delete " + markObject(b), "delete " + markObject(c), "add " + markObject(b)}},
		{name: "the other family stays", have: []lab.Mark{a, c, six}, want: []lab.Mark{a, six},
			plan: []string{"delete " + markObject(c)}},
		{name: "order changed", have: []lab.Mark{a, b}, want: []lab.Mark{b, a},
			plan: []string{"delete " + markObject(b), "delete " + markObject(a), "add " + markObject(b), "add " + markObject(a)}},
		{name: "removed", have: []lab.Mark{a, b}, old: []lab.Mark{a, b}, plan: []string{"delete " + markObject(b), "delete " + markObject(a)}},
		{name: "removed already", old: []lab.Mark{a, b}},
		{name: "foreign rule", have: []lab.Mark{a}, foreign: true, want: []lab.Mark{a},
			plan: []string{"delete fake", "add " + markObject(a)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeMarks{marks: slices.Clone(tc.have), foreign: tc.foreign}
			s := &session{node: node.Node{Name: "director"}, marks: fake}
			want, old := lab.NodeSpec{Name: "director", Marks: tc.want}, lab.NodeSpec{Name: "director", Marks: tc.old}
			changes, err := diffMarks(t.Context(), s, want, old)
			if err != nil {
				t.Fatal(err)
			}
			var plan []string
			for _, c := range changes {
				plan = append(plan, string(c.Action)+" "+c.Object)
				if c.Node != "director" || c.Resource != Marks {
					t.Errorf("change %s", c)
				}
				if err := c.run(t.Context(), s); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(plan, tc.plan) {
				t.Errorf("plan\n  %q\nwant\n  %q", plan, tc.plan)
			}
			if len(tc.want) == 0 && len(tc.old) == 0 && fake.reads > 0 {
				t.Error("read marks on a node that never had any")
			}
			again, err := diffMarks(t.Context(), s, want, old)
			if err != nil || len(again) > 0 {
				t.Errorf("read back after the plan: %v %v", again, err)
			}
		})
	}
}

// lvslab's own network namespace (the host's) is never a node's: the guard is
// tested alone, so that a broken guard cannot let a test write to the host.
func TestRefuseOwnNetns(t *testing.T) {
	for _, p := range []string{"/proc/thread-self/ns/net", "/proc/self/ns/net"} {
		err := refuseInitNetns(node.Node{Name: "host", NSPath: p})
		if err == nil || !strings.Contains(err.Error(), "only in its labs' namespaces") {
			t.Errorf("%s: %v", p, err)
		}
	}
	if err := refuseInitNetns(node.Node{Name: "gone", NSPath: "/run/netns/lvslab-no-such-namespace"}); err == nil {
		t.Error("a missing namespace passed")
	}
}
