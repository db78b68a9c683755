package runner

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// catches reads a process's handled signals: Go's runtime handles SIGURG (its
// preemption signal); a sleep handles nothing; a gone process handles nothing.
func TestCatches(t *testing.T) {
	if !catches(os.Getpid(), syscall.SIGURG) {
		t.Error("this Go process does not handle SIGURG?")
	}
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer cmd.Process.Kill()
	time.Sleep(50 * time.Millisecond)
	if catches(cmd.Process.Pid, syscall.Signal(36)) {
		t.Error("sleep handles SIGRTMIN+2?")
	}
	if catches(1<<30, syscall.SIGURG) {
		t.Error("a process that does not exist handles a signal")
	}
}
