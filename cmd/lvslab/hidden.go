package main

import (
	"fmt"

	"github.com/lvslab/lvslab/pkg/webd"
	"github.com/spf13/cobra"
)

// webdCommand is the built-in web server's process (started by up, in a node).
func (a *app) webdCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "webd",
		Hidden: true,
		RunE:   func(cmd *cobra.Command, _ []string) error { return webd.Main(cmd.Context()) },
	}
}

// labsCommand lists recorded labs, one a line: what the host asks the sandbox.
func (a *app) labsCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "labs",
		Hidden: true,
		RunE: func(*cobra.Command, []string) error {
			names, err := store().List()
			for _, n := range names {
				fmt.Fprintln(a.stdout, n)
			}
			return err
		},
	}
}
