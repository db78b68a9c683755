package state

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestProcessLifecycle(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep binary:", err)
	}
	st, err := ProcessStartTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	p := Process{Role: "sleep", Pid: cmd.Process.Pid, StartTime: st}
	if !p.Alive() || p.Exited() {
		t.Fatal("a running process is alive and has not exited")
	}
	if (Process{Pid: p.Pid, StartTime: st + 1}).Alive() {
		t.Error("a reused pid (other start time) must not count as the recorded process")
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	// Killed but not reaped: a zombie still exists, yet it has exited.
	for i := 0; i < 2000 && !p.Exited(); i++ {
		time.Sleep(time.Millisecond)
	}
	if !p.Exited() {
		t.Fatal("a killed process has not exited after 2 s")
	}
	cmd.Wait()
	if p.Alive() || !p.Exited() {
		t.Error("a reaped process is gone")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("killing a gone process: %v", err)
	}
}

func TestStoreRoundTrip(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	l := &Lab{Name: "x", Nodes: []Node{{Name: "a", Kind: "linux", Namespace: "clab-x-a"}}}
	if err := s.Save(l); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("x")
	if err != nil || got.Nodes[0].Namespace != "clab-x-a" {
		t.Fatalf("load: %+v %v", got, err)
	}
	if names, _ := s.List(); len(names) != 1 || names[0] != "x" {
		t.Errorf("list %v", names)
	}
	if err := s.Remove("x"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("x"); err != nil {
		t.Errorf("second remove: %v", err)
	}
	if _, err := s.Load("x"); err == nil {
		t.Error("loaded a removed lab")
	}
}

func TestRemoveStale(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := s.Save(&Lab{Name: "kept"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "cut.json.tmp"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveStale(); err != nil {
		t.Fatal(err)
	}
	m, _ := filepath.Glob(filepath.Join(s.Dir, "*"))
	if len(m) != 1 || filepath.Base(m[0]) != "kept.json" {
		t.Errorf("left %v, want only kept.json", m)
	}
}
