package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// needKernel skips a test that boots the sandbox kernel unless it can run
// here, and returns the lvslab binary to boot as the guest's init.
func needKernel(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots a sandbox kernel (user-mode-linux): not under -short")
	}
	if _, err := os.Stat("/usr/bin/linux.uml"); err != nil {
		t.Skip("needs user-mode-linux (make deps)")
	}
	self, err := filepath.Abs("../../bin/lvslab")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath(self); err != nil {
		t.Skip("needs bin/lvslab as the guest's init (make build)")
	}
	return self
}

// kernelExec is exec through a one-shot kernel's mux with a given grace period.
func kernelExec(k *Kernel, grace time.Duration) func(context.Context, Request, io.Writer) (int, error) {
	return muxExec(k.mux, grace)
}

// clientExec is exec through a kept sandbox's client.
func clientExec(c *Client) func(context.Context, Request, io.Writer) (int, error) {
	return func(ctx context.Context, req Request, out io.Writer) (int, error) {
		return c.Exec(ctx, req, nil, out, io.Discard)
	}
}

func output(t *testing.T, exec func(context.Context, Request, io.Writer) (int, error), argv ...string) string {
	t.Helper()
	var out bytes.Buffer
	code, err := exec(context.Background(), Request{Argv: argv}, &out)
	if err != nil || code != 0 {
		t.Fatalf("%q: status %d, err %v, output %q", argv, code, err, out.String())
	}
	return out.String()
}

// TestGuest runs commands in one one-shot kernel.
func TestGuest(t *testing.T) {
	self := needKernel(t)
	k, err := Boot(context.Background(), Config{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k.Shutdown(10 * time.Second) })

	t.Run("InterruptOnCancel", func(t *testing.T) {
		checkRolledBack(t, execCancelled(t, func(ctx context.Context, req Request, out io.Writer) (int, error) {
			return k.Exec(ctx, req, nil, out, io.Discard) // the default grace period
		}, "sh", "-c", rollback))
	})
	t.Run("KillAfterGrace", func(t *testing.T) {
		const grace = time.Second
		checkKilledAfter(t, grace, execCancelled(t, kernelExec(k, grace), "sh", "-c", ignoresINT))
	})
	t.Run("OOMScoreAdj", func(t *testing.T) {
		// The command (sh), its parent (the agent), init.
		out := output(t, kernelExec(k, 0), "sh", "-c", "cat /proc/$$/oom_score_adj /proc/$PPID/oom_score_adj /proc/1/oom_score_adj")
		if got := strings.Fields(out); strings.Join(got, " ") != "0 -1000 -1000" {
			t.Errorf("oom_score_adj of a command, the agent, init: %q; want 0 -1000 -1000", got)
		}
	})
	t.Run("Memory", func(t *testing.T) {
		mi, err := k.Memory(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		// The kernel keeps some for itself: MemTotal is a little below mem=.
		if mi.Total > k.Mem() || mi.Total < k.Mem()*8/10 || mi.Available <= 0 || mi.Available > mi.Total {
			t.Errorf("guest memory %+v; booted with %d", mi, k.Mem())
		}
		t.Logf("guest booted with %d MiB: MemTotal %d MiB, MemAvailable %d MiB", k.Mem()>>20, mi.Total>>20, mi.Available>>20)
	})
}

// crash is a command that panics the guest kernel once it has started.
var crash = []string{"sh", "-c", "echo started; echo c > /proc/sysrq-trigger; sleep 30"}

// checkStopped checks that an exec's error says the kernel stopped and quotes
// its console: the panic.
func checkStopped(t *testing.T, code int, err error) {
	t.Helper()
	if !errors.Is(err, ErrKernelStopped) {
		t.Fatalf("status %d, err %v; want the kernel's end", code, err)
	}
	if !strings.Contains(err.Error(), "Kernel panic - not syncing: sysrq triggered crash") {
		t.Errorf("the error does not quote the panic:\n%v", err)
	}
	t.Logf("%v", err)
}

func TestKernelStopReason(t *testing.T) {
	self := needKernel(t)
	k, err := Boot(context.Background(), Config{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Kill)
	code, err := k.Exec(context.Background(), Request{Argv: crash}, nil, io.Discard, io.Discard)
	checkStopped(t, code, err)
	if _, err := k.Exec(context.Background(), Request{Argv: []string{"true"}}, nil, io.Discard, io.Discard); !errors.Is(err, ErrKernelStopped) {
		t.Errorf("an exec after the end: %v; want the kernel's end", err)
	}
}

// TestKeptSandbox serves a kernel in a temporary directory (never the default
// one) and reaches it through clients, as later lvslab commands do.
func TestKeptSandbox(t *testing.T) {
	self := needKernel(t)
	dir := filepath.Join(t.TempDir(), "sandbox")
	const grace = 2 * time.Second
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- Serve(ctx, dir, Config{Self: self, Grace: grace}) }()
	t.Cleanup(func() {
		stop()
		select {
		case <-served:
		case <-time.After(30 * time.Second):
			t.Error("the supervisor did not stop")
		}
		_ = Kill(dir)
	})
	dial := func(t *testing.T) *Client {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			c, err := Dial(dir)
			if err == nil {
				t.Cleanup(func() { c.Close() })
				return c
			}
			select {
			case err := <-served:
				t.Fatalf("the supervisor ended: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("no sandbox in %s after 60s: %v", dir, err)
			}
		}
	}

	t.Run("InterruptOnCancel", func(t *testing.T) {
		checkRolledBack(t, execCancelled(t, clientExec(dial(t)), "sh", "-c", rollback))
	})
	t.Run("KillAfterGrace", func(t *testing.T) {
		c := dial(t)
		c.Grace = time.Second
		checkKilledAfter(t, c.Grace, execCancelled(t, clientExec(c), "sh", "-c", ignoresINT))
	})
	t.Run("DroppedClient", func(t *testing.T) {
		// Two commands on one connection, which then drops: the one that rolls
		// back does so; the one that ignores SIGINT is killed after the grace.
		marker := filepath.Join(t.TempDir(), "rolled-back")
		c := dial(t)
		rolling, ignoring := newMarked("started"), newMarked("started")
		for _, r := range []struct {
			w   *marked
			cmd string
		}{
			{rolling, fmt.Sprintf(`trap "echo rolled back > %s; exit 3" INT; echo started; sleep 30 & wait`, marker)},
			{ignoring, `trap "" INT; echo $$ started; exec sleep 60`},
		} {
			go func() {
				_, _ = c.Exec(context.Background(), Request{Argv: []string{"sh", "-c", r.cmd}}, nil, r.w, io.Discard)
			}()
			select {
			case <-r.w.seen:
			case <-time.After(60 * time.Second):
				t.Fatalf("%q did not start", r.cmd)
			}
		}
		pid := strings.Fields(ignoring.String())[0]
		dropped := time.Now()
		c.Close()
		// The second command's end, watched from another connection.
		watch, cancel := context.WithTimeout(context.Background(), grace+30*time.Second)
		defer cancel()
		code, err := dial(t).Exec(watch, Request{Argv: []string{"sh", "-c", "while kill -0 " + pid + " 2>/dev/null; do sleep 0.1; done"}}, nil, io.Discard, io.Discard)
		took := time.Since(dropped)
		if err != nil || code != 0 {
			t.Fatalf("watching %s: status %d, err %v", pid, code, err)
		}
		if took < grace {
			t.Errorf("the command that ignores SIGINT ended %v after the drop, before the grace period (%v)", took, grace)
		}
		if b, err := os.ReadFile(marker); err != nil || string(b) != "rolled back\n" {
			t.Errorf("the interrupted command did not roll back: %q, %v", b, err)
		}
	})
	t.Run("Memory", func(t *testing.T) {
		mi, err := dial(t).Memory(context.Background())
		if err != nil || mi.Total <= 0 || mi.Available > mi.Total {
			t.Fatalf("guest memory %+v, %v", mi, err)
		}
	})
	t.Run("StopReason", func(t *testing.T) { // last: the kernel dies
		code, err := dial(t).Exec(context.Background(), Request{Argv: crash}, nil, io.Discard, io.Discard)
		checkStopped(t, code, err)
		select {
		case err := <-served:
			served <- err // for the cleanup
		case <-time.After(30 * time.Second):
			t.Error("the supervisor still runs after its kernel stopped")
		}
		if b, err := os.ReadFile(filepath.Join(dir, consoleLog)); err != nil || !strings.Contains(string(b), "Kernel panic") {
			t.Errorf("console.log kept after the kernel's end: %v, %d bytes", err, len(b))
		}
	})
}
