package engine

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStartWithoutDockerd(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "engine")
	_, err := Start(t.Context(), Config{Dir: dir, Dockerd: "/nonexistent/dockerd", Containerd: "/nonexistent/containerd"})
	if !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("err %v, want ErrNotInstalled", err)
	}
	for _, w := range []string{"/nonexistent/dockerd", "/nonexistent/containerd", "apt-get install docker.io"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the run directory was made: %v", err)
	}
}

func TestConnectWithoutEngine(t *testing.T) {
	if _, err := Connect(t.Context(), filepath.Join(t.TempDir(), "none")); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("err %v, want ErrNotRunning", err)
	}
}

func TestGCWithoutEngine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "engine")
	if err := os.MkdirAll(filepath.Join(dir, "exec"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := GC(t.Context(), dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", dir, err)
	}
	if err := GC(t.Context(), dir); err != nil {
		t.Errorf("again: %v", err)
	}
}

func TestTail(t *testing.T) {
	f := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(f, []byte("a\nb\nc\nd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := Tail(f, 2); got != "  c\n  d" {
		t.Errorf("%q", got)
	}
	if got := Tail(f+".none", 2); !strings.Contains(got, "no such file") {
		t.Errorf("%q", got)
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/run/a\040b\134c`); got != `/run/a b\c` {
		t.Errorf("%q", got)
	}
}

func TestModuleDir(t *testing.T) {
	if got := ModuleDir("/x"); got != "/x" {
		t.Errorf("%q", got)
	}
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "modules.dep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LVSLAB_MODULES", d)
	if got := ModuleDir(""); got != d {
		t.Errorf("%q, want %q", got, d)
	}
}
