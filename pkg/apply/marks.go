package apply

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"golang.org/x/sys/unix"
)

// Firewall marks have two backends behind markBackend: nftables over netlink
// (marks_nft.go) where the node's kernel has nftables' ip family, and legacy
// iptables (marks_iptables.go) where it has not, as in the sandbox kernel.
// openMarkBackend picks one per node namespace; both hold lvslab's marks in a
// table or chain of lvslab's own and touch nothing else, so the plan below is
// the same for both.

// markBackend holds lvslab's firewall marks in one node's namespace. Marks are
// rules in order (a later rule's mark wins over an earlier one's, as with
// MARK --set-mark); IPv4 and IPv6 marks each keep their own order.
type markBackend interface {
	// Read returns the marks in lvslab's table or chain, IPv4 first, each
	// family in rule order, with ports sorted; none when lvslab has none there.
	// A rule lvslab cannot read back as a mark makes it fail with errForeignRule.
	Read(ctx context.Context) ([]lab.Mark, error)
	// Add appends a rule for m, creating lvslab's table or chain (and the hook
	// to it) when missing.
	Add(ctx context.Context, m lab.Mark) error
	// Delete removes the last rule equal to m, if any; when no rule is left in
	// its family, lvslab's table or chain of that family goes too.
	Delete(ctx context.Context, m lab.Mark) error
	// Remove deletes lvslab's tables or chains with everything in them; safe
	// to repeat.
	Remove(ctx context.Context) error
	// String names the backend and where it keeps marks, for people.
	String() string
	// Close releases the backend's handles.
	Close() error
}

// errForeignRule is what Read fails with when lvslab's table or chain holds a
// rule that is not a mark lvslab writes: the plan then rewrites it whole.
var errForeignRule = errors.New("not a rule lvslab writes")

// openMarkBackend returns the backend for n's namespace: nftables when the
// kernel has nftables' ip family there, legacy iptables otherwise.
//
// Detection (openNftMarks): a netlink socket of the nftables family is opened
// inside n's namespace, and one batch that adds and deletes a table of family
// ip ("lvslab-probe") is committed there, so nothing stays. A kernel without
// nfnetlink refuses the socket (EPROTONOSUPPORT: the sandbox kernel, which
// cannot load it); one whose nf_tables lacks the ip family
// (CONFIG_NF_TABLES_IPV4 unset: the sandbox kernel with nf_tables loaded by
// hand) refuses the table (EOPNOTSUPP, or EAFNOSUPPORT on kernels that check
// the family first): both mean legacy iptables. Any other failure is an error.
func openMarkBackend(ctx context.Context, n node.Node) (markBackend, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := refuseInitNetns(n); err != nil {
		return nil, err
	}
	nft, ok, err := openNftMarks(n)
	if err != nil {
		return nil, err
	}
	if ok {
		return nft, nil
	}
	return newIptablesMarks(n)
}

// refuseInitNetns fails when n's namespace is the one lvslab itself runs in
// (the host's, or the sandbox guest's), or that of PID 1 where lvslab may see
// it: lvslab writes firewall marks only in its labs' namespaces. The calling
// goroutine is not locked to a thread, so its thread is in the process's own
// namespace: node.Do keeps every thread it moves locked until it is back.
func refuseInitNetns(n node.Node) error {
	var ns unix.Stat_t
	if err := unix.Stat(n.NSPath, &ns); err != nil {
		return fmt.Errorf("%s: namespace %s: %w", n.Name, n.NSPath, err)
	}
	for _, home := range []string{"/proc/thread-self/ns/net", "/proc/1/ns/net"} {
		var h unix.Stat_t
		err := unix.Stat(home, &h)
		if err != nil && home == "/proc/1/ns/net" {
			continue // not ours to see (another user namespace, or hidepid)
		}
		if err != nil {
			return fmt.Errorf("%s: lvslab's own network namespace (%s): %w", n.Name, home, err)
		}
		if ns.Dev == h.Dev && ns.Ino == h.Ino {
			return fmt.Errorf("%s: namespace %s is %s: lvslab writes firewall marks only in its labs' namespaces", n.Name, n.NSPath, home)
		}
	}
	return nil
}

// markBackend returns the session's firewall-mark backend, chosen when first
// needed.
func (s *session) markBackend(ctx context.Context) (markBackend, error) {
	if s.marks == nil {
		b, err := openMarkBackend(ctx, s.node)
		if err != nil {
			return nil, err
		}
		s.marks = b
		s.done = append(s.done, func() { _ = b.Close() })
	}
	return s.marks, nil
}

// sameMark reports whether a and b mark the same packets with the same mark:
// the order and repetition of ports do not matter.
func sameMark(a, b lab.Mark) bool {
	return a.Protocol == b.Protocol && a.Destination == b.Destination && a.Mark == b.Mark &&
		slices.Equal(markPorts(a.Ports), markPorts(b.Ports))
}

// markPorts returns ports sorted, without repeats: how both backends write them.
func markPorts(ports []uint16) []uint16 {
	p := slices.Clone(ports)
	slices.Sort(p)
	return slices.Compact(p)
}

// byFamily returns the IPv4 marks, then the IPv6 ones, each in their order.
func byFamily(marks []lab.Mark) []lab.Mark {
	out := make([]lab.Mark, 0, len(marks))
	for _, six := range []bool{false, true} {
		for _, m := range marks {
			if m.Destination.Is6() == six {
				out = append(out, m)
			}
		}
	}
	return out
}

// diffMarks plans n's firewall marks, IPv4 and IPv6 each on their own: the
// marks read back from the kernel through the node's backend are kept as long
// as they match want's from the first rule on; the rest are deleted from the
// end and want's remaining marks are appended. With no marks wanted, lvslab's
// marks are removed when the previous spec had some; a table or chain of
// lvslab's holding a rule lvslab does not write is removed and rewritten.
func diffMarks(ctx context.Context, s *session, want, old lab.NodeSpec) ([]Change, error) {
	if len(want.Marks) == 0 && len(old.Marks) == 0 {
		return nil, nil // marks were never lvslab's business on this node
	}
	b, err := s.markBackend(ctx)
	if err != nil {
		return nil, fmt.Errorf("firewall marks: %w", err)
	}
	have, err := b.Read(ctx)
	if errors.Is(err, errForeignRule) {
		out := []Change{{Node: want.Name, Resource: Marks, Object: b.String(), Action: Delete,
			Detail: err.Error(), run: func(ctx context.Context, s *session) error {
				b, err := s.markBackend(ctx)
				if err != nil {
					return err
				}
				return b.Remove(ctx)
			}}}
		for _, m := range byFamily(want.Marks) {
			out = append(out, addMark(want.Name, b, m))
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("firewall marks: %w", err)
	}
	var out []Change
	for _, six := range []bool{false, true} {
		family := func(m lab.Mark) bool { return m.Destination.Is6() != six }
		have := slices.DeleteFunc(slices.Clone(have), family)
		wanted := slices.DeleteFunc(slices.Clone(want.Marks), family)
		keep := 0
		for keep < len(have) && keep < len(wanted) && sameMark(have[keep], wanted[keep]) {
			keep++
		}
		for i := len(have) - 1; i >= keep; i-- {
			m := have[i]
			out = append(out, Change{Node: want.Name, Resource: Marks, Object: markObject(m), Action: Delete, Detail: b.String(),
				run: func(ctx context.Context, s *session) error {
					b, err := s.markBackend(ctx)
					if err != nil {
						return err
					}
					return b.Delete(ctx, m)
				}})
		}
		for _, m := range wanted[keep:] {
			out = append(out, addMark(want.Name, b, m))
		}
	}
	return out, nil
}

func addMark(nodeName string, b markBackend, m lab.Mark) Change {
	return Change{Node: nodeName, Resource: Marks, Object: markObject(m), Action: Add, Detail: b.String(),
		run: func(ctx context.Context, s *session) error {
			b, err := s.markBackend(ctx)
			if err != nil {
				return err
			}
			return b.Add(ctx, m)
		}}
}

// markObject names a mark's rule in a change: "tcp 203.0.113.1 dport 80,443 mark 10".
func markObject(m lab.Mark) string {
	s := fmt.Sprintf("%s %s dport ", m.Protocol, m.Destination)
	for i, p := range markPorts(m.Ports) {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprint(p)
	}
	return s + fmt.Sprintf(" mark %d", m.Mark)
}

// needBinary fails, saying how to install it, when the binary at path is missing.
func needBinary(path string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("firewall marks need %s (apt-get install iptables): %w", path, err)
	}
	return nil
}
