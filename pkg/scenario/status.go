package scenario

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/vishvananda/netlink"
)

// Addresses lists a node's addresses by interface, as "dev addr/len", skipping
// loopback's 127.0.0.1 and IPv6 link-local addresses.
func Addresses(n node.Node) ([]string, error) {
	h, err := n.Netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, err
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	var out []string
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, a := range addrs {
			if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, l.Attrs().Name+" "+a.IPNet.String())
		}
	}
	return out, nil
}

// WriteStatus prints a lab: its nodes, their addresses, and the director's IPVS
// table in the `ipvsadm -Ln` layout.
func WriteStatus(w io.Writer, l *state.Lab) error {
	fmt.Fprintf(w, "lab %s (runtime %s)\n", l.Name, l.Runtime)
	if l.Scenario != "" {
		fmt.Fprintf(w, "  scenario %s\n", l.Scenario)
	}
	fmt.Fprintf(w, "  topology %s\n", l.Topology)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tKIND\tNAMESPACE\tADDRESSES")
	nodes := Nodes(l)
	for i, name := range l.Nodes {
		addrs, err := Addresses(nodes[name])
		a := strings.Join(addrs, ", ")
		if err != nil {
			a = "error: " + err.Error()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", name, l.Kinds[i], l.Namespaces[i], a)
	}
	tw.Flush()
	for _, p := range l.Processes {
		st := "running"
		if !p.Alive() {
			st = "NOT RUNNING"
		}
		fmt.Fprintf(w, "  process %s pid %d: %s\n", p.Role, p.Pid, st)
	}
	if l.Director != "" {
		t, err := ipvsadm.Read(nodes[l.Director])
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "  %s IPVS table:\n", l.Director)
		var b strings.Builder
		if err := ipvsadm.WriteList(&b, t); err != nil {
			return err
		}
		for _, line := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
			fmt.Fprintln(w, "    "+line)
		}
	}
	return nil
}
