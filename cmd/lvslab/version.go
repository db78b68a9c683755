package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"

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
