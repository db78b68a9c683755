package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/lvslab/lvslab/pkg/graph"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/topo"
	"github.com/spf13/cobra"
)

// GraphOptions are lvslab graph's, for a running lab.
type GraphOptions struct {
	Lab    string
	Format graph.Format
	Output string // a file; "" for standard output
}

func (a *app) graphCommand() *cobra.Command {
	var o GraphOptions
	var format string
	c := &cobra.Command{
		Use:   "graph [--format mermaid|dot|svg] [-o FILE] LAB|SCENARIO|TOPOLOGY",
		Short: "draw a lab: nodes, links, addresses, the VIP and the director's forwarding method",
		Long: `Draw a lab's picture: its topology's nodes and links (with the interface at
each end), and, for a scenario or a running lab, each node's addresses (the
VIP marked), the VRRP addresses keepalived moves, and each virtual service with
its scheduler, forwarding method (NAT, DR, TUN) and real servers.

  mermaid  a Mermaid flowchart (GitHub and most Markdown viewers draw it)
  dot      a Graphviz graph (dot -Tsvg or -Tpng draws it)
  svg      a picture, laid out by lvslab itself (no Graphviz needed)

The format defaults to svg when -o names a .svg file, to dot for .dot or .gv,
and to mermaid otherwise. A scenario or topology file needs no lab.`,
		Args: exactArgs(1, "a lab's name, a scenario file or a topology file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := graphFormat(format, o.Output)
			if err != nil {
				return err
			}
			o.Format = f
			if !isFile(args[0]) {
				o.Lab = args[0]
				return a.backend.Graph(cmd.Context(), o)
			}
			g, err := graphOfFile(args[0])
			if err != nil {
				return err
			}
			return a.writeGraph(g, o)
		},
	}
	c.Flags().StringVar(&format, "format", "", "mermaid, dot or svg (default: from -o's extension, else mermaid)")
	c.Flags().StringVarP(&o.Output, "output", "o", "", "write to this file instead of standard output")
	return labCommand(c)
}

// graphFormat is the format asked for, or the one -o's extension names.
func graphFormat(format, output string) (graph.Format, error) {
	if format == "" {
		switch {
		case strings.HasSuffix(output, ".svg"):
			return graph.SVG, nil
		case strings.HasSuffix(output, ".dot"), strings.HasSuffix(output, ".gv"):
			return graph.Dot, nil
		}
		return graph.Mermaid, nil
	}
	f := graph.Format(format)
	if !slices.Contains(graph.Formats, f) {
		return "", usageError{fmt.Errorf("--format %q: want mermaid, dot or svg", format)}
	}
	return f, nil
}

// graphOfFile draws a topology file (*.clab.yml, *.clab.yaml) alone, or a
// scenario file with its topology.
func graphOfFile(file string) (*graph.Graph, error) {
	if strings.HasSuffix(file, ".clab.yml") || strings.HasSuffix(file, ".clab.yaml") {
		t, err := topo.Load(file)
		if err != nil {
			return nil, err
		}
		return graph.Build(t, nil), nil
	}
	s, err := scenario.Load(file)
	if err != nil {
		return nil, err
	}
	return graph.Build(s.Topology, &s.Spec), nil
}

// writeGraph writes g where o says.
func (a *app) writeGraph(g *graph.Graph, o GraphOptions) error {
	var b bytes.Buffer
	if err := g.Write(&b, o.Format); err != nil {
		return err
	}
	if o.Output == "" {
		_, err := a.stdout.Write(b.Bytes())
		return err
	}
	return os.WriteFile(o.Output, b.Bytes(), 0o644)
}

func (b *localBackend) Graph(_ context.Context, o GraphOptions) error {
	l, err := findLab(o.Lab, "")
	if err != nil {
		return fmt.Errorf("graph %s: no such file, and %w", o.Lab, err)
	}
	s, err := scenario.Parse(l.Scenario, []byte(l.Applied))
	if err != nil {
		return fmt.Errorf("lab %s: its scenario: %w", l.Name, err)
	}
	return b.app.writeGraph(graph.Build(s.Topology, &s.Spec), o)
}
