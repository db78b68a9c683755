package apply

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// MarkChain is lvslab's chain in the mangle table; PREROUTING jumps to it.
const MarkChain = "LVSLAB-MARKS"

// IptablesLegacy is the iptables binary used for firewall marks. The sandbox kernel
// has no nftables ip family, but legacy iptables works there; no maintained Go
// library writes legacy iptables rules without the binary, so go-iptables runs it.
const IptablesLegacy = "/usr/sbin/iptables-legacy"

func ruleSpec(m lab.Mark) []string {
	ports := make([]string, len(m.Ports))
	for i, p := range m.Ports {
		ports[i] = strconv.Itoa(int(p))
	}
	return []string{"-d", m.Destination.String() + "/32", "-p", string(m.Protocol), "-m", "multiport",
		"--dports", strings.Join(ports, ","), "-j", "MARK", "--set-mark", strconv.FormatUint(uint64(m.Mark), 10)}
}

// diffMarkChain plans lvslab's mangle chain in n to hold exactly marks (rewritten
// only when it differs) with PREROUTING jumping to it.
func diffMarkChain(n node.Node, marks []lab.Mark) ([]Change, error) {
	if _, err := os.Stat(IptablesLegacy); err != nil {
		return nil, fmt.Errorf("firewall marks need %s (apt-get install iptables): %w", IptablesLegacy, err)
	}
	var same, jumps bool
	err := n.Do(func() error {
		ipt, err := iptables.New(iptables.Path(IptablesLegacy))
		if err != nil {
			return err
		}
		exists, err := ipt.ChainExists("mangle", MarkChain)
		if err != nil || !exists {
			return err
		}
		rules, err := ipt.List("mangle", MarkChain)
		if err != nil {
			return err
		}
		same = len(rules) == len(marks)+1 // the chain's -N line, then one rule per mark
		for _, m := range marks {
			if !same {
				break
			}
			if same, err = ipt.Exists("mangle", MarkChain, ruleSpec(m)...); err != nil {
				return err
			}
		}
		jumps, err = ipt.Exists("mangle", "PREROUTING", "-j", MarkChain)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("firewall marks: %w", err)
	}
	if same && jumps {
		return nil, nil
	}
	var what []string
	for _, m := range marks {
		what = append(what, m.String())
	}
	return []Change{{Node: n.Name, Resource: Marks, Object: MarkChain, Action: Set, Detail: strings.Join(what, "; "),
		exec: func(s *session) error { return writeMarks(s.node, marks, jumps) }}}, nil
}

// writeMarks rewrites lvslab's mangle chain in n to hold marks, and adds the
// jump from PREROUTING unless it is there.
func writeMarks(n node.Node, marks []lab.Mark, jumps bool) error {
	return n.Do(func() error {
		ipt, err := iptables.New(iptables.Path(IptablesLegacy))
		if err != nil {
			return err
		}
		if err := ipt.ClearChain("mangle", MarkChain); err != nil { // creates it if missing
			return err
		}
		for _, m := range marks {
			if err := ipt.Append("mangle", MarkChain, ruleSpec(m)...); err != nil {
				return err
			}
		}
		if !jumps {
			return ipt.Append("mangle", "PREROUTING", "-j", MarkChain)
		}
		return nil
	})
}

// removeMarks deletes lvslab's mangle chain in n and the jump to it.
func removeMarks(n node.Node) error {
	err := n.Do(func() error {
		ipt, err := iptables.New(iptables.Path(IptablesLegacy))
		if err != nil {
			return err
		}
		if err := ipt.DeleteIfExists("mangle", "PREROUTING", "-j", MarkChain); err != nil {
			return err
		}
		if ok, err := ipt.ChainExists("mangle", MarkChain); err != nil || !ok {
			return err
		}
		return ipt.ClearAndDeleteChain("mangle", MarkChain)
	})
	if err != nil {
		return fmt.Errorf("%s: remove firewall marks: %w", n.Name, err)
	}
	return nil
}
