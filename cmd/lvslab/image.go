package main

import (
	"io"
	"os"

	"github.com/lvslab/lvslab/pkg/image"
	"github.com/spf13/cobra"
)

func (a *app) imageCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "image",
		Short: "the node image of container labs (lvslab/node:VERSION)",
	}
	var output string
	build := &cobra.Command{
		Use:   "build [--output FILE]",
		Short: "build the node image from this host's programs and import it into lvslab's engine",
		Long: `Builds lvslab/node:` + version + ` from this host's installed programs and the
libraries they load (ip, ipvsadm, curl, legacy iptables, tcpdump, arping,
keepalived, busybox with its httpd, and lvslab itself as web server and init),
without any registry, and imports it into lvslab's Docker engine, which runs in
the sandbox kernel (started if need be; lvslab gc stops it).

With --output, writes the image's root file system as a tar archive instead
(- for standard output), for docker import elsewhere; no engine is involved.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" {
				return a.writeImage(cmd, output)
			}
			b, err := a.chooseBackend(cmd.Context())
			if err != nil {
				return err
			}
			return b.ImageBuild(cmd.Context())
		},
	}
	build.Flags().StringVarP(&output, "output", "o", "", "write the root file system as a tar archive to `FILE` (- for standard output)")
	c.AddCommand(build)
	return c
}

// writeImage writes the node image's tar archive to a file or standard output.
func (a *app) writeImage(cmd *cobra.Command, output string) error {
	var w io.Writer = a.stdout
	var f *os.File
	if output != "-" {
		var err error
		if f, err = os.Create(output); err != nil {
			return err
		}
		w = f
	}
	st, err := image.Write(cmd.Context(), w, image.Options{Self: self()})
	if f != nil {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(output)
		}
	}
	if err != nil {
		return err
	}
	a.logf("✓ %s root file system: %d files, %.1f MB\n", image.Ref(version), st.Files, float64(st.Bytes)/1e6)
	return nil
}

// nodeInitCommand is a node container's first process (the image's command).
func (a *app) nodeInitCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "node-init",
		Hidden: true,
		RunE:   func(cmd *cobra.Command, _ []string) error { return image.Init(cmd.Context()) },
	}
}
