package main

import (
	"fmt"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/spf13/cobra"
)

func (a *app) upCommand() *cobra.Command {
	var o UpOptions
	var runtime string
	c := &cobra.Command{
		Use:   "up [--name LAB] [--keep] [--runtime netns|containerlab] SCENARIO",
		Short: "bring a lab up",
		Long: `Build a lab from a scenario file: namespaces, links, addresses, routes,
sysctls, IPVS, firewall marks, web servers. Returns once every web server answers.
All or nothing: a failure (or Ctrl-C) removes what was built, unless --keep.`,
		Example: "  lvslab up scenarios/nat-rr.yaml\n  lvslab up --name stu01 scenarios/dr-rr.yaml\n  lvslab up --runtime containerlab scenarios/nat-rr.yaml",
		Args:    exactArgs(1, "one scenario file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Scenario = args[0]
			switch o.Runtime = lab.Runtime(runtime); o.Runtime {
			case lab.RuntimeNetns, lab.RuntimeContainerlab:
			default:
				return usageError{fmt.Errorf("--runtime %q: give netns or containerlab", runtime)}
			}
			return a.backend.Up(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&runtime, "runtime", string(lab.RuntimeNetns), "how the nodes are made: netns (namespaces, fast) or containerlab (Docker containers deployed by containerlab)")
	c.Flags().StringVar(&o.Name, "name", "", "the lab's name (default: the scenario's), to run one scenario twice")
	c.Flags().BoolVar(&o.Keep, "keep", false, "keep a half-built lab when a step fails, for inspection")
	return labCommand(c)
}

// tryHint is the first command to try on a fresh lab.
func tryHint(s *scenario.Scenario) string {
	d, ok := s.Spec.Node(s.Director())
	if _, client := s.Topology.Nodes["client"]; !ok || len(d.Services) == 0 || !client {
		return ""
	}
	svc := d.Services[0]
	if svc.Protocol != lab.TCP {
		return ""
	}
	return "lvslab exec client -- curl -s " + verify.URL(svc.Addr)
}
