package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/lvslab/lvslab/internal/chromium"
	"github.com/lvslab/lvslab/internal/clitest"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
)

// These tests drive the built binary on the host, against a kept sandbox kernel:
// lvslab up returns, and later commands reach the same lab.

func binary(t *testing.T) clitest.CLI {
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
	cli, err := clitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	if sandbox.Running(sandbox.Dir()) {
		t.Fatalf("a sandbox kernel is already running; stop it first (lvslab down)")
	}
	t.Cleanup(func() { cli.Run(context.Background(), "gc") })
	return cli
}

// lv runs the CLI and logs what it did.
func lv(t *testing.T, cli clitest.CLI, args ...string) (string, string, int) {
	t.Helper()
	r, err := cli.Run(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	return r.Stdout, r.Stderr, r.Code
}

// umlProcesses counts host processes of the kept sandbox kernel (the one in
// sandbox.DefaultDir), and of no other: throwaway sandbox kernels (make
// privileged's, and hostkernel's) may run beside these tests.
func umlProcesses() int {
	n := 0
	kept := "\x00uml_dir=" + filepath.Join(sandbox.DefaultDir, "uml") + "\x00"
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), kept) {
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
	forwardToLab(t, bin)
	shellInTmux(t, bin)
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

// interrupted runs lvslab with the LVSLAB_TEST_STALL hook set to stall, waits
// until the command (in the guest) stalls there, checks that half is made,
// sends SIGINT to the host's lvslab and returns what it printed and its exit.
func interrupted(t *testing.T, cli clitest.CLI, stall string, half func(), args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(cli.Bin, args...)
	cmd.Dir = cli.Dir
	cmd.Env = append(os.Environ(), "LVSLAB_TEST_STALL="+stall)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen strings.Builder
	buf := make([]byte, 4096)
	for !strings.Contains(seen.String(), "stalled after") {
		n, err := stderr.Read(buf)
		seen.Write(buf[:n])
		if err != nil {
			t.Fatalf("lvslab %s ended before it stalled: %v\n%s", strings.Join(args, " "), err, seen.String())
		}
	}
	half()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(stderr)
	seen.Write(rest)
	err = cmd.Wait()
	t.Logf("$ lvslab %s, interrupted: %v\n%s", strings.Join(args, " "), err, seen.String())
	return seen.String(), err
}

// netnsInGuest lists the guest's named namespaces, through a node of lab.
func netnsInGuest(t *testing.T, cli clitest.CLI, lab string) string {
	t.Helper()
	out, _, _ := lv(t, cli, "exec", "--lab", lab, "client", "--", "ls", "/run/netns")
	return out
}

// Ctrl-C on the host during lvslab up, apply or verify reaches the guest: up's
// half-built lab is removed, apply's half-made edit is rolled back, verify's
// fresh lab is removed; another lab in the same kernel stays.
func TestInterruptRollsBackInSandbox(t *testing.T) {
	cli := binary(t)
	if _, stderr, code := lv(t, cli, "up", "--kernel", "uml", "--name", "stays", "scenarios/nat-rr.yaml"); code != 0 {
		t.Fatalf("up: %s", stderr)
	}

	// up, stalled once its topology exists.
	_, err := interrupted(t, cli, "topology", func() {
		if !strings.Contains(netnsInGuest(t, cli, "stays"), "clab-cut-director") {
			t.Fatal("the interrupted lab was not half built")
		}
	}, "up", "--name", "cut", "scenarios/nat-rr.yaml")
	if err == nil {
		t.Fatal("an interrupted up succeeded")
	}
	if ns := netnsInGuest(t, cli, "stays"); strings.Contains(ns, "clab-cut-") || !strings.Contains(ns, "clab-stays-director") {
		t.Errorf("after the interrupted up the guest holds:\n%s", ns)
	}

	// apply, stalled once its changes are made: web2's weight is 3 then.
	s, err := scenario.Load(filepath.Join(cli.Dir, "scenarios/nat-rr.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Nodes[slices.IndexFunc(s.Spec.Nodes, func(n lab.NodeSpec) bool { return n.Name == "director" })].Services[0].Servers[1].Weight = 3
	edited := filepath.Join(t.TempDir(), "weight.yaml")
	if err := scenario.Write(edited, s); err != nil {
		t.Fatal(err)
	}
	saved := func() string {
		out, _, _ := lv(t, cli, "ipvs", "--save", "stays")
		return out
	}
	before := saved()
	stderr, err := interrupted(t, cli, "apply", func() {
		if !strings.Contains(saved(), "-w 3") {
			t.Fatal("the interrupted apply had not changed the weight")
		}
	}, "apply", "--name", "stays", edited)
	if err == nil || !strings.Contains(stderr, "rolled back to the scenario applied before (1 changes undone)") {
		t.Fatalf("an interrupted apply: %v", err)
	}
	if after := saved(); after != before {
		t.Errorf("after the interrupted apply the table is\n%s\nwas\n%s", after, before)
	}

	// verify of a file, stalled once its fresh lab's topology exists.
	_, err = interrupted(t, cli, "topology", func() {
		if !strings.Contains(netnsInGuest(t, cli, "stays"), "clab-nat-rr-verify-director") {
			t.Fatal("the interrupted verify had no lab")
		}
	}, "verify", "scenarios/nat-rr.yaml")
	if err == nil {
		t.Fatal("an interrupted verify succeeded")
	}
	if ns := netnsInGuest(t, cli, "stays"); strings.Contains(ns, "verify") {
		t.Errorf("after the interrupted verify the guest holds:\n%s", ns)
	}

	if out, _, _ := lv(t, cli, "sandbox", "status"); !strings.Contains(out, "labs: stays\n") {
		t.Errorf("sandbox status: %s", out)
	}
	if _, stderr, code := lv(t, cli, "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	waitNoUML(t)
}

// A sandbox kernel too small for another lab refuses it with a clear error,
// and stays up with the labs it holds.
func TestRefusesLabThatDoesNotFit(t *testing.T) {
	bin := binary(t)
	t.Setenv("LVSLAB_SANDBOX_MEM", "192M")
	refused := ""
	for i := range 30 {
		_, stderr, code := lv(t, bin, "up", "--kernel", "uml", "--name", fmt.Sprintf("m%d", i), "scenarios/nat-rr.yaml")
		if code != 0 {
			refused = stderr
			break
		}
	}
	if !strings.Contains(refused, "not enough memory for another lab") || !strings.Contains(refused, "LVSLAB_SANDBOX_MEM=") {
		t.Fatalf("no clear refusal within 30 labs in a 192M kernel: %q", refused)
	}
	if out, _, _ := lv(t, bin, "sandbox", "status"); !strings.Contains(out, "running, labs: m0") {
		t.Errorf("the kernel or its labs did not survive the refusal: %s", out)
	}
	if _, stderr, code := lv(t, bin, "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	waitNoUML(t)
}

// forwardToLab runs lvslab forward on the host into the sandbox's NAT lab: a
// Go client's requests to the forwarded port, and headless Chromium's
// reloads, alternate between web1 and web2 (round robin), each a connection
// of its own from the client node.
func forwardToLab(t *testing.T, bin clitest.CLI) {
	t.Helper()
	cmd := exec.Command(bin.Bin, "forward", "0", "client", "203.0.113.1:80")
	cmd.Dir, cmd.Env = bin.Dir, bin.Env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stderr).ReadString('\n')
	m := regexp.MustCompile(`^forwarding (127\.0\.0\.1:\d+) to 203\.0\.113\.1:80 from client`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("forward said %q (%v)", line, err)
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	url := "http://" + m[1] + "/"
	var seq []string
	for range 4 {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seq = append(seq, strings.TrimSpace(string(b)))
	}
	if seq[0] == seq[1] || seq[0] != seq[2] || seq[1] != seq[3] || !strings.HasPrefix(seq[0], "web") {
		t.Errorf("through the forwarded port: %v, not alternating", seq)
	}
	t.Logf("Go client through %s: %v", m[1], seq)

	ctx, ok := chromium.Open(t, 1200, 900)
	if !ok {
		t.Log("no chromium: the browser part is skipped (make hosttest requires it)")
		return
	}
	var shown []string
	for range 4 {
		if err := chromedp.Do(ctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("server"))); err != nil {
			t.Fatal(err)
		}
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("server")))
		if err != nil {
			t.Fatal(err)
		}
		shown = append(shown, text)
	}
	if shown[0] == shown[1] || shown[0] != shown[2] || shown[1] != shown[3] {
		t.Errorf("Chromium's reloads showed %v, not alternating", shown)
	}
	t.Logf("Chromium's reloads through %s: %v", m[1], shown)
}

// shellInTmux drives lvslab shell on a real terminal (tmux): the prompt, line
// editing, the window's size and its change, Ctrl-C reaching the node's
// program and not lvslab, a full-screen program, and the exit status.
func shellInTmux(t *testing.T, bin clitest.CLI) {
	t.Helper()
	tm := clitest.StartTmux(t, 100, 30, fmt.Sprintf("cd %s && %s shell client; echo EXIT=$?; sleep 60", bin.Dir, bin.Bin))
	waitFor, keys, screen := tm.WaitFor, tm.Keys, tm.Screen
	waitFor("the prompt", `(?m)^root@client:\S*#\s*$`)
	keys("echo $((6*7))", "Enter")
	waitFor("arithmetic in the node's shell", `(?m)^42\s*$`)
	keys("echo abX", "BSpace", "c", "Enter")
	waitFor("line editing", `(?m)^abc\s*$`)
	keys("ip -br addr show dev eth1", "Enter")
	waitFor("the node's own interface", `eth1@\S+ +UP +203\.0\.113\.10/24`)
	keys("stty size", "Enter")
	waitFor("the window's size", `(?m)^30 100\s*$`)
	tm.Resize(120, 40)
	keys("clear; stty size", "Enter")
	waitFor("the window's new size", `(?m)^40 120\s*$`)
	keys("clear; sleep 30", "Enter")
	time.Sleep(time.Second)
	keys("C-c")
	keys("echo alive-$((1+1))", "Enter")
	waitFor("Ctrl-C stopped sleep, not lvslab", `(?m)^alive-2\s*$`)
	keys("top -d 1", "Enter")
	waitFor("a full-screen program", `(?m)^\s*PID\s+USER`)
	// top takes its keys once it has set the terminal up: q until the
	// prompt is back on the last line (top leaves its last screen above it).
	prompt := regexp.MustCompile(`root@client:\S*#\s*$`)
	for i := 0; ; i++ {
		time.Sleep(500 * time.Millisecond)
		keys("q")
		time.Sleep(500 * time.Millisecond)
		if prompt.MatchString(strings.TrimRight(screen(), "\n ")) {
			break
		}
		if i == 10 {
			t.Fatalf("top did not quit on q:\n%s", screen())
		}
	}
	keys("clear; echo back", "Enter")
	waitFor("the shell after top", `(?m)^back\s*$`)
	keys("exit 3", "Enter")
	waitFor("the shell's exit status", `EXIT=3`)

	// On a terminal, up shows each step with its time (a live line while it runs).
	tm.Run("new-window", "-t", "lvs", fmt.Sprintf("cd %s && %s up --name progress scenarios/nat-rr.yaml; echo UP=$?; %s down progress; sleep 60", bin.Dir, bin.Bin, bin.Bin))
	waitFor("up's progress", `(?s)✓ topology topologies/lvs-nat\.clab\.yml \(\d+\.\ds\).*✓ web servers answering \(\d+\.\ds\).*UP=0`)
	t.Logf("lvslab shell in tmux: prompt, editing, size 100x30 then 120x40, Ctrl-C, top, exit 3: all seen")
}
