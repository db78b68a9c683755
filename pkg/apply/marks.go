package apply

import (
	"fmt"
	"github.com/lvslab/lvslab/pkg/lab"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-iptables/iptables"
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

// reconcileMarks makes lvslab's mangle chain in n hold exactly marks (rewriting the
// chain only when it differs) and PREROUTING jump to it.
func reconcileMarks(n node.Node, marks []lab.Mark, dry bool) ([]Change, error) {
	var changes []Change
	note := func(f string, a ...any) { changes = append(changes, Change{n.Name, fmt.Sprintf(f, a...)}) }
	if _, err := os.Stat(IptablesLegacy); err != nil {
		return nil, fmt.Errorf("%s: firewall marks need %s (apt-get install iptables): %w", n.Name, IptablesLegacy, err)
	}
	err := n.Do(func() error {
		ipt, err := iptables.New(iptables.Path(IptablesLegacy))
		if err != nil {
			return err
		}
		exists, err := ipt.ChainExists("mangle", MarkChain)
		if err != nil {
			return err
		}
		same := exists
		if exists {
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
		}
		jump := []string{"-j", MarkChain}
		jumps := exists
		if exists {
			if jumps, err = ipt.Exists("mangle", "PREROUTING", jump...); err != nil {
				return err
			}
		}
		if same && jumps {
			return nil
		}
		if dry {
			note("mangle chain %s differs from the %d marks wanted", MarkChain, len(marks))
			return nil
		}
		if err := ipt.ClearChain("mangle", MarkChain); err != nil { // creates it if missing
			return err
		}
		for _, m := range marks {
			if err := ipt.Append("mangle", MarkChain, ruleSpec(m)...); err != nil {
				return err
			}
			note("mark %s %s:%v with %d", m.Protocol, m.Destination, m.Ports, m.Mark)
		}
		if !jumps {
			if err := ipt.Append("mangle", "PREROUTING", jump...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return changes, fmt.Errorf("%s: firewall marks: %w", n.Name, err)
	}
	return changes, nil
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
