package topo

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Each invalid fixture names, on its first line, the error it must produce.
func TestInvalidTopologies(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.clab.yml")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be '# want: <error>'", f)
			}
			_, err = Load(f)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error %q", f, want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("Load(%s) error\n  got  %q\n  want %q", f, err, want)
			}
		})
	}
}

func TestShippedTopologies(t *testing.T) {
	files, _ := filepath.Glob("../../topologies/*.clab.yml")
	files = append(files, "testdata/valid/two-nodes.clab.yml")
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestNATTopology(t *testing.T) {
	top, err := Load("../../topologies/lvs-nat.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	if top.Name != "lvs-nat" {
		t.Errorf("name %q", top.Name)
	}
	if got := strings.Join(top.NodeNames(), ","); got != "lan,client,director,web1,web2" {
		t.Errorf("NodeNames = %s (bridges first, then sorted)", got)
	}
	if got := strings.Join(top.Interfaces("director"), ","); got != "eth1,eth2" {
		t.Errorf("director interfaces %s", got)
	}
	if got := strings.Join(top.Peers("lan"), ","); got != "director,web1,web2" {
		t.Errorf("lan peers %s", got)
	}
	if NSName("nat-rr", "web1") != "clab-nat-rr-web1" {
		t.Error("namespace names must follow containerlab's clab-<lab>-<node>")
	}
}

// Load reads only regular files of bounded size: /dev/zero used to be read until
// memory ran out, and a FIFO without a writer blocked forever.
func TestLoadOnlyBoundedRegularFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.clab.yml")
	if err := os.WriteFile(big, append([]byte("name: x\n#"), bytes.Repeat([]byte("x"), MaxFileSize)...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/dev/zero", "topology: /dev/zero is not a regular file"},
		{fifo, "topology: " + fifo + " is not a regular file"},
		{dir, "topology: " + dir + " is not a regular file"},
		{big, "topology: " + big + " is larger than"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Load(c.path)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("Load(%s): error %v, want %q", c.path, err, c.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Load(%s) still reading after 5s", c.path)
		}
	}
}
