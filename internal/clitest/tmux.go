package clitest

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// TB is what Tmux needs of a test: a *testing.T, or Ginkgo's GinkgoT().
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	TempDir() string
	Cleanup(func())
}

// Tmux is a tmux server of a test's own (its socket in the test's temporary
// directory, killed when the test ends) with one session, "lvs": a real
// terminal to drive lvslab on, by keys, reading its screen.
type Tmux struct {
	t    TB
	sock string
}

// StartTmux runs command (a shell command line) in a new session of a window
// cols wide and rows high.
func StartTmux(t TB, cols, rows int, command string) *Tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("no tmux (make testdeps installs it)")
	}
	m := &Tmux{t: t, sock: filepath.Join(t.TempDir(), "tmux.sock")}
	m.Run("new-session", "-d", "-s", "lvs", "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), command)
	t.Cleanup(func() { _ = exec.Command("tmux", "-S", m.sock, "kill-server").Run() })
	return m
}

// Run runs a tmux command on this server and returns what it printed.
func (m *Tmux) Run(args ...string) string {
	m.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", m.sock}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// Screen is what the session's window shows.
func (m *Tmux) Screen() string { return m.Run("capture-pane", "-p", "-t", "lvs") }

// Keys types keys (tmux's names: Enter, BSpace, C-c) into the session.
func (m *Tmux) Keys(keys ...string) { m.Run(append([]string{"send-keys", "-t", "lvs"}, keys...)...) }

// Resize makes the session's window cols wide and rows high.
func (m *Tmux) Resize(cols, rows int) {
	m.Run("resize-window", "-t", "lvs", "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows))
}

// WaitFor waits up to 20 s until the screen matches re, and fails the test
// with what the screen shows then; what names the wait.
func (m *Tmux) WaitFor(what, re string) {
	m.t.Helper()
	r := regexp.MustCompile(re)
	deadline := time.Now().Add(20 * time.Second)
	for !r.MatchString(m.Screen()) {
		if time.Now().After(deadline) {
			m.t.Fatalf("%s: no %q on the screen:\n%s", what, re, m.Screen())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
