// Package clitest runs the lvslab binary for tests: the one way the host tests,
// the host-kernel test, the stress target and the e2e suite run the CLI.
package clitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Result is what one run of the CLI gave.
type Result struct {
	Args           []string
	Stdout, Stderr string
	Code           int // the exit status
}

func (r Result) String() string {
	return fmt.Sprintf("$ lvslab %s -> %d\n%s%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// CLI is the lvslab binary, run from a directory with an environment.
type CLI struct {
	Bin string   // the binary
	Dir string   // its working directory (the repository root)
	Env []string // its environment; this process's when nil
}

// Run runs lvslab with args and returns its output and exit status; err is
// only for a binary that could not run at all.
func (c CLI) Run(ctx context.Context, args ...string) (Result, error) {
	cmd := exec.CommandContext(ctx, c.Bin, args...)
	cmd.Dir, cmd.Env = c.Dir, c.Env
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := Result{Args: args, Stdout: out.String(), Stderr: errOut.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code, err = ee.ExitCode(), nil
	}
	return r, err
}

// Repo finds the repository root: the directory holding go.mod, from the
// working directory up.
func Repo() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Default is the repository's bin/lvslab (or $LVSLAB_BIN), run from the root.
func Default() (CLI, error) {
	root, err := Repo()
	if err != nil {
		return CLI{}, err
	}
	bin := os.Getenv("LVSLAB_BIN")
	if bin == "" {
		bin = filepath.Join(root, "bin", "lvslab")
	}
	if _, err := os.Stat(bin); err != nil {
		return CLI{}, fmt.Errorf("build lvslab first (make build), or set LVSLAB_BIN: %w", err)
	}
	return CLI{Bin: bin, Dir: root}, nil
}
