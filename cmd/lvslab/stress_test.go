package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lvslab/lvslab/internal/clitest"
)

// TestKillUpAtRandomPoints kills lvslab up with SIGKILL at random moments spread
// over the whole of up (before the record, in the topology, apply, the web
// servers, and after), then runs lvslab gc: no namespace, process, link or
// record of the lab may be left. make stress runs it inside a sandbox kernel
// (LVSLAB_STRESS=N kills; at least 100); it is not part of make test.
func TestKillUpAtRandomPoints(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LVSLAB_STRESS"))
	if n == 0 {
		t.Skip("a stress target: make stress")
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Fatal("needs a kernel with IPVS: make stress runs this in the sandbox kernel")
	}
	cli, err := clitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		r, err := cli.Run(t.Context(), args...)
		if err == nil && r.Code != 0 {
			err = fmt.Errorf("exit status %d", r.Code)
		}
		return r.String(), err
	}
	if out, err := run("gc"); err != nil {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	baseLinks := links(t)
	// How long a whole up takes here: kills are spread over 0..1.2 of it.
	var full []time.Duration
	for i := range 3 {
		start := time.Now()
		if out, err := run("up", "--name", fmt.Sprintf("probe%d", i), "scenarios/nat-rr.yaml"); err != nil {
			t.Fatalf("up: %v\n%s", err, out)
		}
		full = append(full, time.Since(start))
		if out, err := run("down"); err != nil {
			t.Fatalf("down: %v\n%s", err, out)
		}
	}
	slices.Sort(full)
	span := full[1] * 12 / 10
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("up takes %v (median of 3); kills spread over 0..%v; seed %d", full[1], span, seed)
	phases := map[string]int{}
	for i := range n {
		name := fmt.Sprintf("kill%d", i)
		delay := time.Duration(rng.Int64N(int64(span)))
		cmd := exec.Command(cli.Bin, "up", "--name", name, "scenarios/nat-rr.yaml")
		cmd.Dir = cli.Dir
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		last := make(chan string, 1)
		go func() {
			phase := "before the topology"
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				if step, ok := strings.CutPrefix(sc.Text(), "✓ "); ok {
					phase = "after " + strings.Fields(step)[0]
				}
				if strings.Contains(sc.Text(), "is up in") {
					phase = "after up returned"
				}
			}
			last <- phase
		}()
		time.Sleep(delay) // the kill point itself is what is random: not a wait for state
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_ = cmd.Wait()
		phases[<-last]++
		if out, err := run("gc"); err != nil {
			t.Fatalf("kill %d after %v: gc: %v\n%s", i, delay, err, out)
		}
		if left := leftovers(t, baseLinks); left != "" {
			t.Fatalf("kill %d after %v (%v): left behind: %s", i, delay, phases, left)
		}
	}
	t.Logf("%d kills, by the last step up had reported: %v", n, phases)
}

// links lists the links of this (the kernel's initial) namespace.
func links(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/dev")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(string(b), "\n")[2:] {
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, " ")
}

// leftovers describes what a lab left: namespaces, records, processes in
// another network namespace than init's, links in init's.
func leftovers(t *testing.T, baseLinks string) string {
	t.Helper()
	var out []string
	if m, _ := filepath.Glob("/run/netns/*"); len(m) > 0 {
		out = append(out, fmt.Sprintf("namespaces %v", m))
	}
	if m, _ := filepath.Glob("/run/lvslab/labs/*"); len(m) > 0 {
		out = append(out, fmt.Sprintf("records %v", m))
	}
	initNS, _ := os.Readlink("/proc/1/ns/net")
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns != initNS {
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			out = append(out, fmt.Sprintf("process %s (%s) in %s", e.Name(), strings.ReplaceAll(string(cmdline), "\x00", " "), ns))
		}
	}
	if l := links(t); l != baseLinks {
		out = append(out, fmt.Sprintf("links %q, were %q", l, baseLinks))
	}
	return strings.Join(out, "; ")
}
