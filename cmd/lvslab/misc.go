package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/webd"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// version and commit are set at build time (make build passes
// -ldflags "-X main.version=... -X main.commit=..."); the Go build's own VCS
// stamp fills the commit in when the linker did not.
var (
	version = "devel"
	commit  = ""
)

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "lvslab's version, commit, Go, and the kernel lvslab would use",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			commit, modified := commit, ""
			if bi, ok := debug.ReadBuildInfo(); ok && commit == "" {
				for _, s := range bi.Settings {
					switch s.Key {
					case "vcs.revision":
						commit = s.Value
					case "vcs.modified":
						if s.Value == "true" {
							modified = " (modified)"
						}
					}
				}
			}
			w := a.stdout
			fmt.Fprintf(w, "lvslab %s\n", version)
			if commit == "" {
				commit = "unknown"
			}
			fmt.Fprintf(w, "commit %s%s\n", commit, modified)
			fmt.Fprintf(w, "go     %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
			fmt.Fprintf(w, "kernel %s\n", kernelInUse())
			return nil
		},
	}
}

// kernelInUse says which kernel labs would be built on, as auto chooses it.
func kernelInUse() string {
	var u unix.Utsname
	_ = unix.Uname(&u)
	release := unix.ByteSliceToString(u.Release[:])
	switch {
	case inSandbox():
		return "sandbox " + release + " (user-mode-linux, IPVS)"
	case hostCanIPVS():
		return "host " + release + " (IPVS)"
	}
	uml := "not installed (apt-get install user-mode-linux)"
	if ents, err := os.ReadDir("/usr/lib/uml/modules"); err == nil && len(ents) > 0 {
		uml = ents[len(ents)-1].Name() + " (user-mode-linux, IPVS)"
	}
	return fmt.Sprintf("sandbox %s; the host's %s has no IPVS", uml, release)
}

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
