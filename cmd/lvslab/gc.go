package main

import (
	"errors"

	"github.com/spf13/cobra"
)

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
