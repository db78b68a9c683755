package main

import "github.com/spf13/cobra"

func (a *app) downCommand() *cobra.Command {
	return labCommand(&cobra.Command{
		Use:   "down [LAB...]",
		Short: "remove labs (all when none is named); safe to repeat",
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.backend.Down(cmd.Context(), args)
		},
	})
}
