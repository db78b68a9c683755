package main

import (
	"errors"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/spf13/cobra"
)

func (a *app) upCommand() *cobra.Command {
	var o UpOptions
	c := &cobra.Command{
		Use:   "up [--name LAB] [--keep] SCENARIO",
		Short: "bring a lab up",
		Long: `Build a lab from a scenario file: namespaces, links, addresses, routes,
sysctls, IPVS, firewall marks, web servers. Returns once every web server answers.
All or nothing: a failure (or Ctrl-C) removes what was built, unless --keep.`,
		Example: "  lvslab up scenarios/nat-rr.yaml\n  lvslab up --name stu01 scenarios/dr-rr.yaml",
		Args:    exactArgs(1, "one scenario file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Scenario = args[0]
			return a.backend.Up(cmd.Context(), o)
		},
	}
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

func (a *app) applyCommand() *cobra.Command {
	var o ApplyOptions
	c := &cobra.Command{
		Use:   "apply [--name LAB] SCENARIO",
		Short: "bring a running lab to an edited scenario",
		Long: `Bring a running lab to an edited scenario: only what differs changes (a weight
change edits that one real server); what the previously applied scenario declared
and this one does not is removed; web servers restart only if their configuration
changed. Ends by reading every namespace back.`,
		Args: exactArgs(1, "one scenario file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Scenario = args[0]
			return a.backend.Apply(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Name, "name", "", "the lab's name (default: the scenario's)")
	return labCommand(c)
}

func (a *app) downCommand() *cobra.Command {
	return labCommand(&cobra.Command{
		Use:   "down [LAB...]",
		Short: "remove labs (all when none is named); safe to repeat",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.backend.Down(cmd.Context(), args)
		},
	})
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

func (a *app) gcCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "gc",
		Short: "remove every lab, and any sandbox kernel left behind (after a crash or kill -9)",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var errs []error
			for _, b := range a.everyBackend() {
				errs = append(errs, b.GC(cmd.Context()))
			}
			return errors.Join(errs...)
		},
	}
}
