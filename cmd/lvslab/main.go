// Command lvslab builds the classroom LVS lab from a scenario file, runs commands
// in its nodes, shows its state, checks it and removes it. Where the host kernel
// cannot do IPVS, labs live in a user-mode-linux sandbox kernel kept between
// commands; which kernel a command reaches is decided once, in backend.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/sirupsen/logrus"
)

// errExit carries an exit status up to main (a child's, or verify's verdict).
type errExit int

func (e errExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// usageError is a command line lvslab cannot take; it exits with exitUsage.
type usageError struct{ error }

// exitUsage is the exit status of a command line lvslab cannot take: sysexits'
// EX_USAGE, distinct from 1 (a failure) and from verify's verdicts.
const exitUsage = 64

func main() {
	if sandbox.IsGuest() {
		sandbox.GuestMain()
	}
	// moby/ipvs runs modprobe once per process and warns when it fails; lvslab
	// loads the modules itself (pkg/kmod), so that warning is noise.
	logrus.SetLevel(logrus.ErrorLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

// run runs one lvslab command line.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	a := &app{argv: args, stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		return usageError{err}
	}
	return err
}

func exitStatus(err error, stderr io.Writer) int {
	var ee errExit
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return int(ee)
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "lvslab:", err)
		return exitUsage
	}
	fmt.Fprintln(stderr, "lvslab:", err)
	return 1
}
