package clabrt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	dockerC "github.com/docker/docker/client"
	"golang.org/x/sys/unix"
)

// Engine is a Docker engine lvslab runs for its labs where the host has none
// it may use: inside the sandbox kernel, dockerd with its data on a tmpfs,
// without its own iptables rules or default bridge (containerlab's nodes need
// neither: their links are veth pairs, lvslab reaches them through their
// namespaces), its socket and pid file in Dir. Facts checked in the sandbox:
// dockerd 20.10 needs the cgroup2 hierarchy mounted (the guest does it) and a
// data root that is not hostfs ("operation not supported" at container
// create); it starts in about 3 s.
type Engine struct {
	Dir string // run directory: socket, pid file, data (a tmpfs mounted here), log
}

// Host is the engine's API endpoint.
func (e Engine) Host() string { return "unix://" + filepath.Join(e.Dir, "docker.sock") }

func (e Engine) pidFile() string { return filepath.Join(e.Dir, "docker.pid") }
func (e Engine) data() string    { return filepath.Join(e.Dir, "data") }
func (e Engine) log() string     { return filepath.Join(e.Dir, "dockerd.log") }

// Client returns an API client of the engine.
func (e Engine) Client() (*dockerC.Client, error) {
	return dockerC.NewClientWithOpts(dockerC.WithHost(e.Host()), dockerC.WithAPIVersionNegotiation())
}

// Running reports whether the engine answers.
func (e Engine) Running(ctx context.Context) bool {
	cli, err := e.Client()
	if err != nil {
		return false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = cli.Ping(ctx)
	return err == nil
}

// Start starts dockerd unless it answers already, detached from this process
// (it outlives the command that started it, as the lab does), and waits until
// it answers.
func (e Engine) Start(ctx context.Context) error {
	if e.Running(ctx) {
		return nil
	}
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		return fmt.Errorf("no Docker engine: dockerd is not installed (apt-get install docker.io): %w", err)
	}
	_ = e.Stop(ctx) // a dead one's leftovers
	if err := os.MkdirAll(e.data(), 0o700); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", e.data(), "tmpfs", 0, "mode=0700"); err != nil {
		return fmt.Errorf("engine data tmpfs: %w", err)
	}
	logf, err := os.Create(e.log())
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--data-root", e.data(), "--exec-root", filepath.Join(e.Dir, "exec"),
		"--pidfile", e.pidFile(), "-H", e.Host(), "--iptables=false", "--ip6tables=false", "--bridge=none",
		"--storage-driver=vfs")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for !e.Running(ctx) {
		select {
		case err := <-done:
			return fmt.Errorf("dockerd exited at start (%v): %s", err, e.logTail())
		case <-ctx.Done():
			return errors.Join(ctx.Err(), e.Stop(context.WithoutCancel(ctx)))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.Join(fmt.Errorf("dockerd does not answer 60 s after start: %s", e.logTail()), e.Stop(ctx))
		}
	}
	return nil
}

func (e Engine) logTail() string {
	b, _ := os.ReadFile(e.log())
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, "\n")
}

// Stop stops the engine (SIGTERM, then SIGKILL after 20 s) and removes its
// data; an engine already gone is not an error.
func (e Engine) Stop(ctx context.Context) error {
	var errs []error
	if b, err := os.ReadFile(e.pidFile()); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			if err := stopPid(ctx, pid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// containerd-shim processes of its containers are in their own groups:
	// the containers are gone with the engine's exit, their shims with them.
	for _, m := range []string{e.data(), filepath.Join(e.Dir, "exec")} {
		_ = unix.Unmount(m, unix.MNT_DETACH)
	}
	if err := os.RemoveAll(e.Dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func stopPid(ctx context.Context, pid int) error {
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		return nil // gone
	}
	for range 200 {
		if unix.Kill(pid, 0) != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	return nil
}
