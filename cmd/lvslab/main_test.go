package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/sandbox"
)

// These tests drive the built binary on the host, against a kept sandbox kernel:
// lvslab up returns, and later commands reach the same lab.

func binary(t *testing.T) string {
	t.Helper()
	// make hosttest (and so CI) requires these tests: there they fail, not skip.
	skip := t.Skip
	if os.Getenv("LVSLAB_REQUIRE_HOSTTEST") != "" {
		skip = t.Fatal
	}
	if testing.Short() {
		skip("boots the sandbox kernel: runs without -short (make hosttest)")
	}
	if os.Getuid() != 0 {
		skip("needs root")
	}
	if _, err := os.Stat("/usr/bin/linux.uml"); err != nil {
		skip("needs user-mode-linux (make deps)")
	}
	bin, _ := filepath.Abs("../../bin/lvslab")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("build lvslab first (make build): %v", err)
	}
	if sandbox.Running(sandbox.Dir()) {
		t.Fatalf("a sandbox kernel is already running; stop it first (lvslab down)")
	}
	t.Cleanup(func() { exec.Command(bin, "gc").Run() })
	return bin
}

func lv(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "../.."
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("$ lvslab %s -> %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// umlProcesses counts host processes of the sandbox kernel.
func umlProcesses() int {
	n := 0
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), "umid=lvslab") {
			n++
		}
	}
	return n
}

func waitNoUML(t *testing.T) {
	t.Helper()
	for i := 0; i < 200 && umlProcesses() > 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if n := umlProcesses(); n > 0 {
		t.Fatalf("%d sandbox kernel processes left", n)
	}
}

func TestKeptSandboxLab(t *testing.T) {
	bin := binary(t)
	_, stderr, code := lv(t, bin, "up", "--kernel", "uml", "scenarios/nat-rr.yaml")
	if code != 0 {
		t.Fatalf("up: %s", stderr)
	}
	if !strings.Contains(stderr, "lab nat-rr is up") {
		t.Errorf("up output: %s", stderr)
	}
	var seq []string
	for range 4 {
		out, _, code := lv(t, bin, "exec", "client", "--", "curl", "-s", "--max-time", "5", "http://203.0.113.1/")
		if code != 0 {
			t.Fatalf("curl exit %d", code)
		}
		seq = append(seq, strings.TrimSpace(out))
	}
	if seq[0] == seq[1] || seq[0] != seq[2] || seq[1] != seq[3] {
		t.Errorf("answers %v do not alternate", seq)
	}
	if _, _, code := lv(t, bin, "exec", "web1", "--", "sh", "-c", "echo to-stderr >&2; exit 42"); code != 42 {
		t.Errorf("exit status %d, want 42", code)
	}
	out, _, _ := lv(t, bin, "status")
	if !strings.Contains(out, "TCP  203.0.113.1:80 rr") || !strings.Contains(out, "clab-nat-rr-web2") {
		t.Errorf("status:\n%s", out)
	}
	if _, err := os.Stat("/run/netns/clab-nat-rr-client"); err == nil {
		t.Error("the lab's namespaces must live in the sandbox kernel, not on the host")
	}
	if _, stderr, code := lv(t, bin, "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	waitNoUML(t)
	if _, err := os.Stat(sandbox.DefaultDir); err == nil {
		t.Errorf("%s left behind", sandbox.DefaultDir)
	}
	if _, _, code := lv(t, bin, "down"); code != 0 {
		t.Error("a second down failed")
	}
}

func TestGCAfterSupervisorKilled(t *testing.T) {
	bin := binary(t)
	if _, stderr, code := lv(t, bin, "up", "--kernel", "uml", "scenarios/nat-rr.yaml"); code != 0 {
		t.Fatalf("up: %s", stderr)
	}
	b, err := os.ReadFile(filepath.Join(sandbox.DefaultDir, "supervisor.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if _, err := fmt.Sscan(string(b), &pid); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if umlProcesses() == 0 {
		t.Fatal("the kernel should outlive its killed supervisor (that is the leftover gc must find)")
	}
	if _, stderr, code := lv(t, bin, "gc"); code != 0 {
		t.Fatalf("gc: %s", stderr)
	}
	waitNoUML(t)
	if _, err := os.Stat(sandbox.DefaultDir); err == nil {
		t.Errorf("%s left behind", sandbox.DefaultDir)
	}
}

// Ctrl-C on the host during lvslab up reaches the guest: the half-built lab is
// rolled back there, while another lab in the same kernel stays.
func TestInterruptRollsBackInSandbox(t *testing.T) {
	bin := binary(t)
	if _, stderr, code := lv(t, bin, "up", "--kernel", "uml", "--name", "stays", "scenarios/nat-rr.yaml"); code != 0 {
		t.Fatalf("up: %s", stderr)
	}
	cmd := exec.Command(bin, "up", "--name", "cut", "scenarios/nat-rr.yaml")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "LVSLAB_TEST_STALL=topology")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until the guest's up has built the topology and stalls there.
	var seen strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), "stalled after") {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("up ended before it stalled: %v\n%s", err, seen.String())
		}
	}
	// The lab's namespaces exist in the guest now.
	out, _, _ := lv(t, bin, "exec", "--lab", "stays", "client", "--", "ls", "/run/netns")
	if !strings.Contains(out, "clab-cut-director") {
		t.Fatalf("the interrupted lab was not half built:\n%s", out)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	seen.Write(rest)
	err = cmd.Wait()
	t.Logf("interrupted up: %v\n%s", err, seen.String())
	if err == nil {
		t.Fatal("an interrupted up succeeded")
	}
	out, _, _ = lv(t, bin, "exec", "--lab", "stays", "client", "--", "ls", "/run/netns")
	if strings.Contains(out, "clab-cut-") || !strings.Contains(out, "clab-stays-director") {
		t.Errorf("after the interrupt the guest holds:\n%s", out)
	}
	if out, _, _ := lv(t, bin, "sandbox", "status"); !strings.Contains(out, "labs: stays\n") {
		t.Errorf("sandbox status: %s", out)
	}
	if _, stderr, code := lv(t, bin, "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	waitNoUML(t)
}

// A sandbox kernel too small for another lab refuses it with a clear error,
// and stays up with the labs it holds.
func TestRefusesLabThatDoesNotFit(t *testing.T) {
	bin := binary(t)
	t.Setenv("LVSLAB_SANDBOX_MEM", "160M")
	refused := ""
	for i := range 30 {
		_, stderr, code := lv(t, bin, "up", "--kernel", "uml", "--name", fmt.Sprintf("m%d", i), "scenarios/nat-rr.yaml")
		if code != 0 {
			refused = stderr
			break
		}
	}
	if !strings.Contains(refused, "not enough memory for another lab") || !strings.Contains(refused, "LVSLAB_SANDBOX_MEM=") {
		t.Fatalf("no clear refusal within 30 labs in a 160M kernel: %q", refused)
	}
	if out, _, _ := lv(t, bin, "sandbox", "status"); !strings.Contains(out, "running, labs: m0") {
		t.Errorf("the kernel or its labs did not survive the refusal: %s", out)
	}
	if _, stderr, code := lv(t, bin, "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	waitNoUML(t)
}
