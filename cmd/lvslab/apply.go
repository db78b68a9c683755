package main

import "github.com/spf13/cobra"

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
