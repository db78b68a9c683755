package apply

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NftTable and NftChain are where the nftables backend keeps marks: table
// "lvslab" of family ip (IPv4 marks) and of family ip6 (IPv6 marks), each with
// a base chain "prerouting" of type filter on the prerouting hook at priority
// mangle (-150), where iptables' mangle PREROUTING runs. The rule of a mark reads
// as nft prints it:
//
//	ip daddr 203.0.113.1 tcp dport { 80, 443 } meta mark set 0x0000000a
const (
	NftTable = "lvslab"
	NftChain = "prerouting"
)

// nftProbeTable is the table the probe adds and deletes in one batch.
const nftProbeTable = "lvslab-probe"

// nftMarks is the nftables backend: a netlink socket opened inside the node's
// namespace, so nothing it sends can reach another namespace.
type nftMarks struct {
	node string
	conn *nftables.Conn
}

// openNftMarks opens a nftables netlink connection inside n's namespace and
// probes it (openMarkBackend says how). ok is false, with no error, when the
// kernel has no nftables ip family there.
func openNftMarks(n node.Node) (b *nftMarks, ok bool, err error) {
	ns, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		return nil, false, fmt.Errorf("%s: open namespace %s: %w", n.Name, n.NSPath, err)
	}
	defer ns.Close() // the lasting socket stays in the namespace it was made in
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)), nftables.AsLasting())
	if errors.Is(err, unix.EPROTONOSUPPORT) {
		return nil, false, nil // no nfnetlink in this kernel
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: nftables netlink socket: %w", n.Name, err)
	}
	b = &nftMarks{node: n.Name, conn: conn}
	probe := &nftables.Table{Name: nftProbeTable, Family: nftables.TableFamilyIPv4}
	conn.AddTable(probe)
	conn.DelTable(probe)
	err = conn.Flush()
	if err == nil {
		return b, true, nil
	}
	b.Close()
	if nftUnsupported(err) {
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("%s: nftables probe (add and delete table ip %s): %w", n.Name, nftProbeTable, err)
}

// nftUnsupported reports whether err says the kernel lacks nftables or its
// family.
func nftUnsupported(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT)
}

func (b *nftMarks) String() string { return "nftables table ip/ip6 " + NftTable }

// Close closes the netlink socket.
func (b *nftMarks) Close() error { return b.conn.CloseLasting() }

// nftFamilies are the families marks go to, IPv4 first.
var nftFamilies = []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6}

func familyName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyIPv6 {
		return "ip6"
	}
	return "ip"
}

// nftFamily is the family of the table holding a mark to a.
func nftFamily(a netip.Addr) nftables.TableFamily {
	if a.Is4() {
		return nftables.TableFamilyIPv4
	}
	return nftables.TableFamilyIPv6
}

func nftTable(f nftables.TableFamily) *nftables.Table {
	return &nftables.Table{Name: NftTable, Family: f}
}

// nftChain is lvslab's base chain in t.
func nftChain(t *nftables.Table) *nftables.Chain {
	return &nftables.Chain{Name: NftChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle}
}

// nftRule is one of lvslab's rules read back: its handle, and its mark.
type nftRule struct {
	handle uint64
	mark   lab.Mark
}

// state reads lvslab's table of family f: whether it exists, and its rules.
// A chain other than lvslab's base chain, or a rule that is not a mark, fails
// with errForeignRule.
func (b *nftMarks) state(f nftables.TableFamily) (exists bool, rules []nftRule, err error) {
	where := fmt.Sprintf("%s: nftables table %s %s", b.node, familyName(f), NftTable)
	tables, err := b.conn.ListTablesOfFamily(f)
	if err != nil {
		return false, nil, fmt.Errorf("%s: list tables: %w", where, err)
	}
	if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == NftTable }) {
		return false, nil, nil
	}
	chains, err := b.conn.ListChainsOfTableFamily(f)
	if err != nil {
		return true, nil, fmt.Errorf("%s: list chains: %w", where, err)
	}
	t, want := nftTable(f), nftChain(nftTable(f))
	var found bool
	for _, c := range chains {
		if c.Table == nil || c.Table.Name != NftTable {
			continue
		}
		if c.Name != NftChain || c.Type != want.Type || c.Hooknum == nil || *c.Hooknum != *want.Hooknum ||
			c.Priority == nil || *c.Priority != *want.Priority {
			return true, nil, fmt.Errorf("%s: chain %s: %w", where, c.Name, errForeignRule)
		}
		found = true
	}
	if !found {
		return true, nil, nil
	}
	got, err := b.conn.GetRules(t, want)
	if err != nil {
		return true, nil, fmt.Errorf("%s: list rules of chain %s: %w", where, NftChain, err)
	}
	for _, r := range got {
		m, err := markFromExprs(f, r.Exprs, func(set string) ([]uint16, error) { return b.setPorts(t, set) })
		if err != nil {
			return true, nil, fmt.Errorf("%s: rule handle %d: %w", where, r.Handle, err)
		}
		rules = append(rules, nftRule{handle: r.Handle, mark: m})
	}
	return true, rules, nil
}

// setPorts reads the ports of the set a rule looks up.
func (b *nftMarks) setPorts(t *nftables.Table, name string) ([]uint16, error) {
	set, err := b.conn.GetSetByName(t, name)
	if err != nil {
		return nil, fmt.Errorf("set %s: %w", name, err)
	}
	if set.KeyType.Bytes != 2 || set.IsMap || set.Interval || set.Concatenation {
		return nil, fmt.Errorf("set %s (key %s): %w", name, set.KeyType.Name, errForeignRule)
	}
	elems, err := b.conn.GetSetElements(set)
	if err != nil {
		return nil, fmt.Errorf("elements of set %s: %w", name, err)
	}
	ports := make([]uint16, 0, len(elems))
	for _, e := range elems {
		if len(e.Key) != 2 || e.IntervalEnd {
			return nil, fmt.Errorf("set %s element %x: %w", name, e.Key, errForeignRule)
		}
		ports = append(ports, binaryutil.BigEndian.Uint16(e.Key))
	}
	return ports, nil
}

// Read implements markBackend.
func (b *nftMarks) Read(ctx context.Context) ([]lab.Mark, error) {
	var marks []lab.Mark
	for _, f := range nftFamilies {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		_, rules, err := b.state(f)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			marks = append(marks, r.mark)
		}
	}
	return marks, nil
}

// Add implements markBackend: one batch creates the table and chain when
// missing (adding an existing one changes nothing), the set of ports when
// there is more than one, and the rule.
func (b *nftMarks) Add(ctx context.Context, m lab.Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := nftFamily(m.Destination)
	t := b.conn.AddTable(nftTable(f))
	c := b.conn.AddChain(nftChain(t))
	var set *nftables.Set
	if ports := markPorts(m.Ports); len(ports) > 1 {
		set = &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
		elems := make([]nftables.SetElement, len(ports))
		for i, p := range ports {
			elems[i] = nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(p)}
		}
		if err := b.conn.AddSet(set, elems); err != nil {
			return fmt.Errorf("%s: nftables: set of ports for %s: %w", b.node, markObject(m), err)
		}
	}
	exprs, err := markExprs(m, set)
	if err != nil {
		return fmt.Errorf("%s: nftables: rule %s: %w", b.node, markObject(m), err)
	}
	b.conn.AddRule(&nftables.Rule{Table: t, Chain: c, Exprs: exprs})
	if err := b.conn.Flush(); err != nil {
		return fmt.Errorf("%s: nftables: add rule to %s %s %s (%s): %w", b.node, familyName(f), NftTable, NftChain, markObject(m), err)
	}
	return nil
}

// Delete implements markBackend.
func (b *nftMarks) Delete(ctx context.Context, m lab.Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := nftFamily(m.Destination)
	exists, rules, err := b.state(f)
	if err != nil || !exists {
		return err
	}
	last := -1
	for j, r := range rules {
		if sameMark(r.mark, m) {
			last = j
		}
	}
	if last < 0 {
		return nil // gone already
	}
	t := nftTable(f)
	if len(rules) == 1 {
		b.conn.DelTable(t) // its last rule: the table goes, with its chain and sets
	} else if derr := b.conn.DelRule(&nftables.Rule{Table: t, Chain: nftChain(t), Handle: rules[last].handle}); derr != nil {
		return fmt.Errorf("%s: nftables: delete rule handle %d (%s): %w", b.node, rules[last].handle, markObject(m), derr)
	}
	if err := b.conn.Flush(); err != nil {
		return fmt.Errorf("%s: nftables: delete %s from %s %s: %w", b.node, markObject(m), familyName(f), NftTable, err)
	}
	return nil
}

// Remove implements markBackend.
func (b *nftMarks) Remove(ctx context.Context) error {
	var errs []error
	for _, f := range nftFamilies {
		if err := ctx.Err(); err != nil {
			return err
		}
		tables, err := b.conn.ListTablesOfFamily(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: nftables: list tables of family %s: %w", b.node, familyName(f), err))
			continue
		}
		if !slices.ContainsFunc(tables, func(t *nftables.Table) bool { return t.Name == NftTable }) {
			continue
		}
		b.conn.DelTable(nftTable(f))
		if err := b.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("%s: nftables: delete table %s %s: %w", b.node, familyName(f), NftTable, err))
		}
	}
	return errors.Join(errs...)
}

// Rule encoding. A mark's rule, as nft builds `ip daddr VIP tcp dport { 80,
// 443 } meta mark set 10` (ip6 daddr in the ip6 table):
//
//	payload load network header, daddr          => reg 1
//	cmp eq reg 1, VIP
//	meta load l4proto                           => reg 1
//	cmp eq reg 1, 6 (tcp) or 17 (udp)
//	payload load transport header, offset 2, 2  => reg 1   (the destination port)
//	cmp eq reg 1, port                                    (one port)
//	lookup reg 1 in an anonymous set of ports             (more than one)
//	immediate reg 1, mark (host byte order)
//	meta set mark with reg 1

// daddrField is where a family's network header holds the destination address.
func daddrField(f nftables.TableFamily) (offset, length uint32) {
	if f == nftables.TableFamilyIPv6 {
		return 24, 16
	}
	return 16, 4
}

// markExprs returns the expressions of m's rule; set is the anonymous set of
// its ports when it has more than one (nil otherwise).
func markExprs(m lab.Mark, set *nftables.Set) ([]expr.Any, error) {
	if !m.Destination.IsValid() {
		return nil, errors.New("no destination address")
	}
	ports := markPorts(m.Ports)
	if len(ports) == 0 {
		return nil, errors.New("no ports")
	}
	proto := m.Protocol.Number()
	if _, ok := lab.ProtocolFromNumber(proto); !ok {
		return nil, fmt.Errorf("protocol %q", m.Protocol)
	}
	off, n := daddrField(nftFamily(m.Destination))
	e := []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: m.Destination.AsSlice()},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(proto)}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
	switch {
	case len(ports) == 1:
		e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(ports[0])})
	case set == nil:
		return nil, fmt.Errorf("%d ports and no set to hold them", len(ports))
	default:
		e = append(e, &expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID})
	}
	return append(e,
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(m.Mark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	), nil
}

// markFromExprs reads a rule of lvslab's table of family f back into the mark
// it sets; setPorts returns the ports in the set a lookup names. Expressions
// other than those markExprs writes make it fail with errForeignRule.
func markFromExprs(f nftables.TableFamily, exprs []expr.Any, setPorts func(set string) ([]uint16, error)) (lab.Mark, error) {
	var m lab.Mark
	var hasDst, hasProto, hasPorts, hasMark bool
	foreign := func(i int, what string) (lab.Mark, error) {
		if what != "" {
			what = " " + what
		}
		return lab.Mark{}, fmt.Errorf("expression %d (%T)%s: %w", i, exprs[i], what, errForeignRule)
	}
	// cmpAfter returns the data of the equality test of register reg that
	// follows expression i.
	cmpAfter := func(i int, reg uint32) ([]byte, bool) {
		if i+1 >= len(exprs) {
			return nil, false
		}
		c, ok := exprs[i+1].(*expr.Cmp)
		if !ok || c.Op != expr.CmpOpEq || c.Register != reg {
			return nil, false
		}
		return c.Data, true
	}
	off, n := daddrField(f)
	for i := 0; i < len(exprs); i++ {
		switch e := exprs[i].(type) {
		case *expr.Payload:
			if e.OperationType != expr.PayloadLoad {
				return foreign(i, "writes the packet")
			}
			switch {
			case e.Base == expr.PayloadBaseNetworkHeader && e.Offset == off && e.Len == n && !hasDst:
				data, ok := cmpAfter(i, e.DestRegister)
				a, aok := netip.AddrFromSlice(data)
				if !ok || !aok {
					return foreign(i, "is not followed by a test of the destination address")
				}
				m.Destination, hasDst = a, true
				i++
			case e.Base == expr.PayloadBaseTransportHeader && e.Offset == 2 && e.Len == 2 && !hasPorts:
				if data, ok := cmpAfter(i, e.DestRegister); ok && len(data) == 2 {
					m.Ports, hasPorts = []uint16{binaryutil.BigEndian.Uint16(data)}, true
					i++
					continue
				}
				if i+1 >= len(exprs) {
					return foreign(i, "ends the rule")
				}
				l, ok := exprs[i+1].(*expr.Lookup)
				if !ok || l.Invert || l.IsDestRegSet || l.SourceRegister != e.DestRegister {
					return foreign(i, "is not followed by a test of the destination port")
				}
				ports, err := setPorts(l.SetName)
				if err != nil {
					return lab.Mark{}, err
				}
				m.Ports, hasPorts = markPorts(ports), true
				i++
			default:
				return foreign(i, fmt.Sprintf("loads base %d offset %d length %d", e.Base, e.Offset, e.Len))
			}
		case *expr.Meta:
			switch {
			case e.Key == expr.MetaKeyL4PROTO && !e.SourceRegister && !hasProto:
				data, ok := cmpAfter(i, e.Register)
				if !ok || len(data) != 1 {
					return foreign(i, "is not followed by a test of the protocol")
				}
				p, known := lab.ProtocolFromNumber(uint16(data[0]))
				if !known {
					return foreign(i, fmt.Sprintf("tests protocol %d", data[0]))
				}
				m.Protocol, hasProto = p, true
				i++
			default:
				return foreign(i, fmt.Sprintf("meta key %d", e.Key))
			}
		case *expr.Immediate:
			if hasMark || len(e.Data) != 4 || i+1 >= len(exprs) {
				return foreign(i, "is not a mark")
			}
			set, ok := exprs[i+1].(*expr.Meta)
			if !ok || set.Key != expr.MetaKeyMARK || !set.SourceRegister || set.Register != e.Register {
				return foreign(i, "is not followed by meta mark set")
			}
			m.Mark, hasMark = binaryutil.NativeEndian.Uint32(e.Data), true
			i++
		default:
			return foreign(i, "")
		}
	}
	if !hasDst || !hasProto || !hasPorts || !hasMark {
		return lab.Mark{}, fmt.Errorf("rule lacks a destination, protocol, port or mark: %w", errForeignRule)
	}
	if nftFamily(m.Destination) != f {
		return lab.Mark{}, fmt.Errorf("destination %s in family %s: %w", m.Destination, familyName(f), errForeignRule)
	}
	return m, nil
}
