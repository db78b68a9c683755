package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func (a *app) execCommand() *cobra.Command {
	var o ExecOptions
	var tty bool
	c := &cobra.Command{
		Use:   "exec [--lab LAB] [-i] [-t] NODE -- COMMAND...",
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
			if tty {
				return a.backend.Shell(cmd.Context(), ShellOptions{Lab: o.Lab, Node: o.Node, Argv: o.Argv})
			}
			return a.backend.Exec(cmd.Context(), o)
		},
	}
	// Everything after the node belongs to the command, its flags included.
	c.Flags().SetInterspersed(false)
	c.Flags().StringVar(&o.Lab, "lab", "", "the lab (needed when several labs have the node)")
	c.Flags().BoolVarP(&o.Stdin, "interactive", "i", false, "pass standard input to the command")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a pseudo-terminal of its own (top, watch), as lvslab shell does")
	return labCommand(c)
}
