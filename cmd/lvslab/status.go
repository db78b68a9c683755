package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/spf13/cobra"
)

// writeStatus prints a lab: its nodes, their addresses, and the director's IPVS
// table in the `ipvsadm -Ln` layout.
func writeStatus(w io.Writer, l *state.Lab) error {
	fmt.Fprintf(w, "lab %s (runtime %s)\n", l.Name, l.Runtime)
	if l.Scenario != "" {
		fmt.Fprintf(w, "  scenario %s\n", l.Scenario)
	}
	fmt.Fprintf(w, "  topology %s\n", l.Topology)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tKIND\tNAMESPACE\tADDRESSES")
	nodes := l.Handles()
	for _, n := range l.Nodes {
		if n.Namespace == "" {
			// A containerlab bridge: a Linux bridge of the engine's host.
			fmt.Fprintf(tw, "  %s\t%s\t%s\t\n", n.Name, n.Kind, "(engine host)")
			continue
		}
		addrs, err := nodes[n.Name].Addresses()
		a := strings.Join(addrs, ", ")
		if err != nil {
			a = "error: " + err.Error()
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Name, n.Kind, n.Namespace, a)
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
		t, err := apply.ReadTable(nodes[l.Director])
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

func (a *app) statusCommand() *cobra.Command {
	return labCommand(&cobra.Command{
		Use:   "status [LAB...]",
		Short: "labs, nodes, namespaces, addresses, processes and the director's table",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.backend.Status(cmd.Context(), args)
		},
	})
}
