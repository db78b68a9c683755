package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/jsonview"
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
	var o StatusOptions
	c := &cobra.Command{
		Use:   "status [--json] [LAB...]",
		Short: "labs, nodes, namespaces, addresses, processes and the director's table",
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Labs = args
			return a.backend.Status(cmd.Context(), o)
		},
	}
	c.Flags().BoolVar(&o.JSON, "json", false, "print the labs as JSON (lvslab's status.schema.json)")
	return labCommand(c)
}

// statusJSON is a lab's JSON view: its nodes with their addresses as the
// kernel has them, its processes, the director's table.
func statusJSON(l *state.Lab) (jsonview.Lab, error) {
	v := jsonview.Lab{Name: l.Name, Runtime: string(l.Runtime), Scenario: l.Scenario, Topology: l.Topology, Director: l.Director,
		Nodes: []jsonview.Node{}, Processes: []jsonview.Process{}}
	nodes := l.Handles()
	for _, n := range l.Nodes {
		jn := jsonview.Node{Name: n.Name, Kind: n.Kind, Namespace: n.Namespace, Addresses: []string{}}
		if n.Namespace != "" {
			addrs, err := nodes[n.Name].Addresses()
			if err != nil {
				return v, err
			}
			jn.Addresses = append(jn.Addresses, addrs...)
		}
		v.Nodes = append(v.Nodes, jn)
	}
	for _, p := range l.Processes {
		v.Processes = append(v.Processes, jsonview.Process{Role: p.Role, Node: p.Node, Pid: p.Pid, Running: p.Alive()})
	}
	if l.Director != "" {
		t, err := apply.ReadTable(nodes[l.Director])
		if err != nil {
			return v, err
		}
		v.IPVS = jsonview.FromTable(t)
	}
	return v, nil
}
