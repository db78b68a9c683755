package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func (a *app) execCommand() *cobra.Command {
	var o ExecOptions
	c := &cobra.Command{
		Use:   "exec [--lab LAB] [-i] NODE -- COMMAND...",
		Short: "run a command in a node; its exit status is lvslab's",
		Example: "  lvslab exec client -- curl -s http://203.0.113.1/\n" +
			"  lvslab exec director -- ipvsadm -Ln",
		Args: func(_ *cobra.Command, args []string) error {
			if n := len(args); n < 2 || (n == 2 && args[1] == "--") {
				return usageError{errors.New("exec: give a node and a command: lvslab exec NODE -- COMMAND...")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node, o.Argv = args[0], args[1:]
			if o.Argv[0] == "--" {
				o.Argv = o.Argv[1:]
			}
			return a.backend.Exec(cmd.Context(), o)
		},
	}
	// Everything after the node belongs to the command, its flags included.
	c.Flags().SetInterspersed(false)
	c.Flags().StringVar(&o.Lab, "lab", "", "the lab (needed when several labs have the node)")
	c.Flags().BoolVarP(&o.Stdin, "interactive", "i", false, "pass standard input to the command")
	return labCommand(c)
}
