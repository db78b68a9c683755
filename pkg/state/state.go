// Package state records, on disk, what lvslab created for each lab: its namespaces and
// the processes it started. A record is written before anything is created, so a lab
// can be torn down after a crash or kill -9 of the command that built it.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// DefaultDir is where lab records live (a tmpfs: records vanish with a reboot, as
// the namespaces and processes they describe do).
const DefaultDir = "/run/lvslab/labs"

// Process is a process lvslab started for a lab. StartTime (from /proc/<pid>/stat)
// guards against killing an unrelated process that reused the pid.
type Process struct {
	Role      string `json:"role"`           // e.g. "webd-web1"
	Node      string `json:"node,omitempty"` // the node it runs in
	Pid       int    `json:"pid"`
	StartTime uint64 `json:"startTime"`
}

// Node is one node of a lab: its name, kind and network namespace.
type Node struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`      // the topology's kind: linux, bridge
	Namespace string `json:"namespace"` // named netns under node.NetnsDir, created or about to be
}

// Lab is the record of one lab.
type Lab struct {
	Name      string      `json:"name"`
	Runtime   lab.Runtime `json:"runtime"`
	Topology  string      `json:"topology"`           // topology file, absolute
	Scenario  string      `json:"scenario,omitempty"` // scenario file, absolute
	Nodes     []Node      `json:"nodes"`
	Processes []Process   `json:"processes,omitempty"`
	Director  string      `json:"director,omitempty"` // node holding the IPVS services
	Applied   string      `json:"applied,omitempty"`  // the scenario file's text as last applied
}

// Node returns the record of a node.
func (l *Lab) Node(name string) (Node, bool) {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Handles returns a handle for each node that has a network namespace of its
// own, by name (a containerlab bridge has none: it is a bridge of the
// engine's host).
func (l *Lab) Handles() map[string]node.Node {
	m := make(map[string]node.Node, len(l.Nodes))
	for _, n := range l.Nodes {
		if n.Namespace != "" {
			m[n.Name] = node.New(n.Name, n.Namespace)
		}
	}
	return m
}

// Namespaces lists the nodes' namespace names.
func (l *Lab) Namespaces() []string {
	out := make([]string, len(l.Nodes))
	for i, n := range l.Nodes {
		out[i] = n.Namespace
	}
	return out
}

// Store reads and writes lab records under Dir.
type Store struct{ Dir string }

func (s Store) path(lab string) string { return filepath.Join(s.Dir, lab+".json") }

// Save writes the record atomically.
func (s Store) Save(l *Lab) error {
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("state: encode lab %s: %w", l.Name, err)
	}
	tmp := s.path(l.Name) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("state: write lab %s: %w", l.Name, err)
	}
	if err := os.Rename(tmp, s.path(l.Name)); err != nil {
		return fmt.Errorf("state: write lab %s: %w", l.Name, err)
	}
	return nil
}

// ErrNoLab is returned by Load for a lab without a record.
var ErrNoLab = errors.New("no such lab")

// Load reads the record of one lab.
func (s Store) Load(lab string) (*Lab, error) {
	b, err := os.ReadFile(s.path(lab))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("lab %q: %w", lab, ErrNoLab)
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var l Lab
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, fmt.Errorf("state: %s: %w", s.path(lab), err)
	}
	return &l, nil
}

// Remove deletes the record; removing a missing record is not an error.
func (s Store) Remove(lab string) error {
	if err := os.Remove(s.path(lab)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// RemoveStale removes half-written records (a save killed between writing and
// renaming its file). Only call it when no lvslab is saving.
func (s Store) RemoveStale() error {
	m, err := filepath.Glob(filepath.Join(s.Dir, "*.json.tmp"))
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range m {
		errs = append(errs, os.Remove(f))
	}
	return errors.Join(errs...)
}

// List returns the names of all recorded labs, sorted.
func (s Store) List() ([]string, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// stat returns the fields of /proc/<pid>/stat that follow the command name
// (field 3, the state, first): the name may hold spaces, so they follow the last ')'.
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b)[i+1:])
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return f, nil
}

// ProcessStartTime returns the start time of pid in clock ticks since boot, the
// 22nd field of /proc/<pid>/stat.
func ProcessStartTime(pid int) (uint64, error) {
	f, err := stat(pid)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// Alive reports whether p still exists (same pid and same start time), zombie or not.
func (p Process) Alive() bool {
	st, err := ProcessStartTime(p.Pid)
	return err == nil && st == p.StartTime
}

// Exited reports whether p has ended: it is gone, or a zombie waiting to be reaped.
func (p Process) Exited() bool {
	f, err := stat(p.Pid)
	if err != nil {
		return true
	}
	start, err := strconv.ParseUint(f[19], 10, 64)
	return err != nil || start != p.StartTime || f[0] == "Z"
}

// Kill sends SIGKILL to p if it is still the process that was recorded. Killing a
// process that is gone is not an error.
func (p Process) Kill() error {
	if !p.Alive() {
		return nil
	}
	if err := syscall.Kill(p.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Role, p.Pid, err)
	}
	return nil
}

// ProcessesIn lists the processes whose network namespace is one of the named
// ones (under node.NetnsDir), this process excepted. Every process in a lab's
// namespaces is the lab's: this finds what a killed lvslab never recorded.
func ProcessesIn(namespaces []string) []Process {
	type id struct{ dev, ino uint64 }
	want := map[id]bool{}
	for _, n := range namespaces {
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(node.NetnsDir, n), &st); err == nil {
			want[id{st.Dev, st.Ino}] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || !want[id{st.Dev, st.Ino}] {
			continue
		}
		start, err := ProcessStartTime(pid)
		if err != nil {
			continue
		}
		out = append(out, Process{Role: "process in lab namespace", Pid: pid, StartTime: start})
	}
	return out
}

// WaitExited polls until p has exited, for at most bound.
func (p Process) WaitExited(ctx context.Context, bound time.Duration) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(bound)
	for !p.Exited() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s (pid %d) did not exit within %v", p.Role, p.Pid, bound)
		case <-tick.C:
		}
	}
	return nil
}
