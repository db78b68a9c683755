package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

// app is one run of lvslab: its command line, its streams, and the backend its
// command reaches (chosen once, before the command runs).
type app struct {
	argv           []string // the command line as given, forwarded unchanged to the sandbox
	stdin          io.Reader
	stdout, stderr io.Writer
	kernel         string  // --kernel: auto, host or uml
	backend        Backend // where the labs live, for commands that need one
}

// needsBackend marks commands that act on labs.
const needsBackend = "lvslab/backend"

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "lvslab",
		Short: "the LVS (IPVS) lab as software",
		Long: `lvslab builds the classroom LVS lab (Linux Virtual Server, kernel IPVS) from a
scenario file and a containerlab topology, programs the director and the web
servers, runs commands in the nodes, and checks that the kernel behaves as the
lab teaches. Where this kernel cannot do IPVS, labs live in a user-mode-linux
sandbox kernel that lvslab keeps between commands.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Annotations[needsBackend] == "" {
				return nil
			}
			b, err := a.chooseBackend(cmd.Context())
			a.backend = b
			return err
		},
	}
	root.PersistentFlags().StringVar(&a.kernel, "kernel", "auto",
		"where labs live: auto (this kernel if it can do IPVS and no sandbox runs, else the sandbox), host, uml")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(
		a.upCommand(), a.applyCommand(), a.downCommand(), a.statusCommand(), a.execCommand(),
		a.ipvsCommand(), a.verifyCommand(), a.gcCommand(), a.sandboxCommand(), a.imageCommand(),
		a.exportCommand(), a.graphCommand(), a.captureCommand(), a.forwardCommand(), a.relayCommand(), a.gradeCommand(), a.shellCommand(), a.versionCommand(), a.webdCommand(), a.labsCommand(), a.nodeInitCommand(),
	)
	return root
}

// labCommand marks c as acting on labs: a backend is chosen before it runs.
func labCommand(c *cobra.Command) *cobra.Command {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[needsBackend] = "yes"
	return c
}

// exactArgs is cobra.ExactArgs with a usage error (exit status exitUsage).
func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("give %s", what)}
		}
		return nil
	}
}

func (a *app) logf(format string, args ...any) { fmt.Fprintf(a.stderr, format, args...) }

func self() string {
	s, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return s
}
