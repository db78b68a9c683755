package apply

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// MarkChain is the legacy iptables backend's chain in the mangle table
// (iptables-legacy's for IPv4 marks, ip6tables-legacy's for IPv6 ones);
// PREROUTING jumps to it. A mark's rule reads as iptables prints it:
//
//	-A LVSLAB-MARKS -d 203.0.113.1/32 -p tcp -m multiport --dports 80,443 -j MARK --set-xmark 0xa/0xffffffff
const MarkChain = "LVSLAB-MARKS"

// IptablesLegacy and Ip6tablesLegacy are the binaries of the legacy iptables
// backend. The sandbox kernel has no nftables ip family, but legacy iptables
// works there; no maintained Go library writes legacy iptables rules without
// the binary, so go-iptables runs it, inside the node's namespace.
const (
	IptablesLegacy  = "/usr/sbin/iptables-legacy"
	Ip6tablesLegacy = "/usr/sbin/ip6tables-legacy"
)

// xtState is what the backend knows of lvslab's chain in one family.
type xtState int

const (
	xtUnknown xtState = iota // not read yet
	xtAbsent                 // neither the chain nor the jump to it exists
	xtHooked                 // the chain exists and PREROUTING jumps to it
)

// xtFamily is one family of the legacy backend: IPv4 or IPv6.
type xtFamily struct {
	six   bool
	path  string // the iptables binary
	names string // the kernel's list of the family's tables, in the thread's namespace
	ipt   *iptables.IPTables
	state xtState
}

func (f *xtFamily) String() string {
	return "mangle " + MarkChain + " of " + f.path[strings.LastIndex(f.path, "/")+1:]
}

// iptablesMarks is the legacy iptables backend.
type iptablesMarks struct {
	node node.Node
	fams [2]*xtFamily // IPv4, IPv6
}

func newIptablesMarks(n node.Node) (*iptablesMarks, error) {
	if err := needBinary(IptablesLegacy); err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	return &iptablesMarks{node: n, fams: [2]*xtFamily{
		{path: IptablesLegacy, names: "/proc/thread-self/net/ip_tables_names"},
		{six: true, path: Ip6tablesLegacy, names: "/proc/thread-self/net/ip6_tables_names"},
	}}, nil
}

func (b *iptablesMarks) String() string { return "iptables-legacy mangle " + MarkChain }

// Close implements markBackend; the backend holds nothing open.
func (b *iptablesMarks) Close() error { return nil }

func (b *iptablesMarks) family(a netip.Addr) *xtFamily {
	if a.Is4() {
		return b.fams[0]
	}
	return b.fams[1]
}

// iptables returns the family's go-iptables handle, made when first needed.
func (b *iptablesMarks) iptables(f *xtFamily) (*iptables.IPTables, error) {
	if f.ipt == nil {
		if err := needBinary(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", b.node.Name, err)
		}
		proto := iptables.ProtocolIPv4
		if f.six {
			proto = iptables.ProtocolIPv6
		}
		ipt, err := iptables.New(iptables.IPFamily(proto), iptables.Path(f.path))
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", b.node.Name, f.path, err)
		}
		f.ipt = ipt
	}
	return f.ipt, nil
}

// do runs fn with the family's handle inside the node's namespace; errors name
// the node and what was being done.
func (b *iptablesMarks) do(f *xtFamily, what string, fn func(*iptables.IPTables) error) error {
	ipt, err := b.iptables(f)
	if err != nil {
		return err
	}
	if err := b.node.Do(func() error { return fn(ipt) }); err != nil {
		return fmt.Errorf("%s: %s: %s: %w", b.node.Name, f, what, err)
	}
	return nil
}

// hasMangle reports whether the node's kernel namespace has the family's
// mangle table. Asking iptables about a table the namespace lacks would make
// it, so the kernel's list is read instead (no list: the module is not loaded).
func (b *iptablesMarks) hasMangle(f *xtFamily) (bool, error) {
	var has bool
	err := b.node.Do(func() error {
		data, err := os.ReadFile(f.names)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		has = slices.Contains(strings.Fields(string(data)), "mangle")
		return err
	})
	if err != nil {
		return false, fmt.Errorf("%s: %s: %w", b.node.Name, f.names, err)
	}
	return has, nil
}

// rules reads the family's chain: its rules as iptables -S prints them (none
// when it is absent). A chain PREROUTING does not jump to fails with
// errForeignRule: lvslab never leaves one.
func (b *iptablesMarks) rules(f *xtFamily) ([]string, error) {
	has, err := b.hasMangle(f)
	if err != nil || !has {
		f.state = xtAbsent
		return nil, err
	}
	var hooked, exists bool
	var rules []string
	err = b.do(f, "list", func(ipt *iptables.IPTables) error {
		pre, err := ipt.List("mangle", "PREROUTING")
		if err != nil {
			return err
		}
		hooked = slices.Contains(pre, "-A PREROUTING -j "+MarkChain)
		all, err := ipt.List("mangle", MarkChain)
		var xerr *iptables.Error
		if errors.As(err, &xerr) && xerr.IsNotExist() {
			return nil
		}
		exists = err == nil
		for _, r := range all {
			if strings.HasPrefix(r, "-A ") {
				rules = append(rules, r)
			}
		}
		return err
	})
	switch {
	case err != nil:
		f.state = xtUnknown
		return nil, err
	case hooked && exists:
		f.state = xtHooked
		return rules, nil
	case !hooked && !exists:
		f.state = xtAbsent
		return nil, nil
	}
	f.state = xtUnknown
	return nil, fmt.Errorf("%s: %s: chain exists %v, PREROUTING jumps to it %v: %w", b.node.Name, f, exists, hooked, errForeignRule)
}

// Read implements markBackend.
func (b *iptablesMarks) Read(ctx context.Context) ([]lab.Mark, error) {
	var marks []lab.Mark
	for _, f := range b.fams {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rules, err := b.rules(f)
		if err != nil {
			return nil, err
		}
		for _, r := range rules {
			m, err := parseMarkRule(r)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %q: %w", b.node.Name, f, r, err)
			}
			marks = append(marks, m)
		}
	}
	return marks, nil
}

// Add implements markBackend: the chain and the jump to it are made when
// missing, then the rule is appended.
func (b *iptablesMarks) Add(ctx context.Context, m lab.Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := b.family(m.Destination)
	spec, err := ruleSpec(m)
	if err != nil {
		return fmt.Errorf("%s: %s: rule %s: %w", b.node.Name, f, markObject(m), err)
	}
	return b.do(f, "append "+strings.Join(spec, " "), func(ipt *iptables.IPTables) error {
		if f.state != xtHooked {
			exists := false
			if f.state != xtAbsent {
				var err error
				if exists, err = ipt.ChainExists("mangle", MarkChain); err != nil {
					return err
				}
			}
			if !exists {
				if err := ipt.NewChain("mangle", MarkChain); err != nil {
					return err
				}
			}
			if err := ipt.AppendUnique("mangle", "PREROUTING", "-j", MarkChain); err != nil {
				return err
			}
			f.state = xtHooked
		}
		return ipt.Append("mangle", MarkChain, spec...)
	})
}

// Delete implements markBackend.
func (b *iptablesMarks) Delete(ctx context.Context, m lab.Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f := b.family(m.Destination)
	rules, err := b.rules(f)
	if err != nil {
		return err
	}
	last := -1
	for i, r := range rules {
		if got, err := parseMarkRule(r); err == nil && sameMark(got, m) {
			last = i
		}
	}
	switch {
	case last < 0:
		return nil // gone already
	case len(rules) == 1: // its last rule: the chain and the jump go too
		return b.removeFamily(f)
	}
	return b.do(f, fmt.Sprintf("delete rule %d (%s)", last+1, markObject(m)), func(ipt *iptables.IPTables) error {
		return ipt.DeleteById("mangle", MarkChain, last+1)
	})
}

// removeFamily deletes the jump to the family's chain and the chain.
func (b *iptablesMarks) removeFamily(f *xtFamily) error {
	has, err := b.hasMangle(f)
	if err != nil || !has {
		return err
	}
	err = b.do(f, "remove", func(ipt *iptables.IPTables) error {
		for {
			err := ipt.Delete("mangle", "PREROUTING", "-j", MarkChain)
			var xerr *iptables.Error
			if errors.As(err, &xerr) && xerr.IsNotExist() {
				break
			}
			if err != nil {
				return err
			}
		}
		return ipt.ClearAndDeleteChain("mangle", MarkChain)
	})
	if err == nil {
		f.state = xtAbsent
	}
	return err
}

// Remove implements markBackend.
func (b *iptablesMarks) Remove(ctx context.Context) error {
	var errs []error
	for _, f := range b.fams {
		if err := ctx.Err(); err != nil {
			return err
		}
		errs = append(errs, b.removeFamily(f))
	}
	return errors.Join(errs...)
}

// ruleSpec is m's rule as iptables' arguments (ports sorted, without repeats).
func ruleSpec(m lab.Mark) ([]string, error) {
	if !m.Destination.IsValid() {
		return nil, errors.New("no destination address")
	}
	ports := markPorts(m.Ports)
	if len(ports) == 0 || len(ports) > 15 {
		return nil, fmt.Errorf("%d ports (multiport takes 1 to 15)", len(ports))
	}
	if _, ok := lab.ProtocolFromNumber(m.Protocol.Number()); !ok {
		return nil, fmt.Errorf("protocol %q", m.Protocol)
	}
	p := make([]string, len(ports))
	for i, port := range ports {
		p[i] = strconv.Itoa(int(port))
	}
	dst := netip.PrefixFrom(m.Destination, m.Destination.BitLen())
	return []string{"-d", dst.String(), "-p", string(m.Protocol), "-m", "multiport",
		"--dports", strings.Join(p, ","), "-j", "MARK", "--set-mark", strconv.FormatUint(uint64(m.Mark), 10)}, nil
}

// parseMarkRule reads a rule of lvslab's chain, as iptables -S prints it, back
// into its mark. Anything but what ruleSpec writes fails with errForeignRule.
func parseMarkRule(rule string) (lab.Mark, error) {
	f := strings.Fields(rule)
	if len(f) < 2 || f[0] != "-A" || f[1] != MarkChain {
		return lab.Mark{}, fmt.Errorf("not a rule of %s: %w", MarkChain, errForeignRule)
	}
	var m lab.Mark
	var hasDst, hasProto, hasPorts, hasMark bool
	args := f[2:]
	next := func(i, n int) ([]string, bool) {
		if i+n >= len(args) {
			return nil, false
		}
		return args[i+1 : i+1+n], true
	}
	bad := func(i int) (lab.Mark, error) {
		return lab.Mark{}, fmt.Errorf("at %q: %w", strings.Join(args[i:], " "), errForeignRule)
	}
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-d":
			v, ok := next(i, 1)
			if !ok || hasDst {
				return bad(i)
			}
			p, err := netip.ParsePrefix(v[0])
			if err != nil || p.Bits() != p.Addr().BitLen() {
				return bad(i)
			}
			m.Destination, hasDst = p.Addr(), true
			i++
		case "-p":
			v, ok := next(i, 1)
			if !ok || hasProto {
				return bad(i)
			}
			p, err := lab.ParseProtocol(v[0])
			if err != nil {
				return bad(i)
			}
			m.Protocol, hasProto = p, true
			i++
		case "-m":
			v, ok := next(i, 3)
			if !ok || hasPorts || v[0] != "multiport" || v[1] != "--dports" {
				return bad(i)
			}
			for _, s := range strings.Split(v[2], ",") {
				p, err := strconv.ParseUint(s, 10, 16)
				if err != nil || p == 0 {
					return bad(i)
				}
				m.Ports = append(m.Ports, uint16(p))
			}
			m.Ports, hasPorts = markPorts(m.Ports), true
			i += 3
		case "-j":
			v, ok := next(i, 3)
			if !ok || hasMark || v[0] != "MARK" || v[1] != "--set-xmark" {
				return bad(i)
			}
			val, mask, ok := strings.Cut(v[2], "/")
			mark, err := strconv.ParseUint(val, 0, 32)
			if !ok || err != nil || mask != "0xffffffff" {
				return bad(i)
			}
			m.Mark, hasMark = uint32(mark), true
			i += 3
		default:
			return bad(i)
		}
	}
	if !hasDst || !hasProto || !hasPorts || !hasMark {
		return lab.Mark{}, fmt.Errorf("rule lacks a destination, protocol, port or mark: %w", errForeignRule)
	}
	return m, nil
}
