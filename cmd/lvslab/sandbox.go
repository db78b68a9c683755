package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/spf13/cobra"
)

func (a *app) sandboxCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "sandbox",
		Short: "the user-mode-linux sandbox kernel",
	}
	var bare bool
	run := &cobra.Command{
		Use:   "run [--bare] -- COMMAND...",
		Short: "boot a fresh sandbox kernel, run COMMAND in it, power off; COMMAND's exit status is lvslab's",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("sandbox run: no command")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := sandbox.Config{Bare: bare}
			if os.Getenv("LVSLAB_SANDBOX_LOG") != "" {
				cfg.Log = a.stderr
			}
			code, err := sandbox.Run(cmd.Context(), cfg, args)
			if err != nil {
				return err
			}
			if code != 0 {
				return errExit(code)
			}
			return nil
		},
	}
	run.Flags().SetInterspersed(false)
	run.Flags().BoolVar(&bare, "bare", false, "boot like a host with IPVS not yet loaded: no module loaded, the module tree at /lib/modules/<release>")
	var dir string
	serve := &cobra.Command{
		Use:    "serve",
		Short:  "serve a kept sandbox kernel (the supervisor that lvslab up starts)",
		Hidden: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sandbox.Serve(cmd.Context(), dir, sandbox.Config{})
		},
	}
	serve.Flags().StringVar(&dir, "dir", sandbox.Dir(), "directory for the sandbox's files")
	status := &cobra.Command{
		Use:   "status",
		Short: "whether the kept sandbox kernel runs, and its labs",
		RunE: func(cmd *cobra.Command, _ []string) error {
			if labs, running := a.sandboxed().labs(cmd.Context()); running {
				fmt.Fprintf(a.stdout, "running, labs: %s\n", strings.Join(labs, ", "))
			} else {
				fmt.Fprintln(a.stdout, "not running")
			}
			return nil
		},
	}
	stop := &cobra.Command{
		Use:   "stop",
		Short: "power the kept sandbox kernel off, and every lab in it",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return sandbox.Stop(cmd.Context(), sandbox.Dir())
		},
	}
	c.AddCommand(run, serve, status, stop)
	return c
}
