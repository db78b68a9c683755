package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/internal/clitest"
	"golang.org/x/sys/unix"
)

// TestHostKernel runs lvslab as on a distribution's host whose kernel has IPVS
// but has not loaded it: the path of --kernel auto (and host) that no machine
// here has. make hostkernel runs it inside a bare sandbox kernel (lvslab sandbox
// run --bare): nothing loaded, the module tree at /lib/modules/<release>. lvslab
// must detect IPVS by loading it, build the NAT lab on that kernel, and remove
// it again.
func TestHostKernel(t *testing.T) {
	if os.Getenv("LVSLAB_HOSTKERNEL") == "" {
		t.Skip("runs in a bare sandbox kernel: make hostkernel")
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	release := unix.ByteSliceToString(u.Release[:])
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		t.Fatal("IPVS is loaded already: this must run in a bare kernel (lvslab sandbox run --bare)")
	}
	if _, err := os.Stat(filepath.Join("/lib/modules", release, "modules.dep")); err != nil {
		t.Fatalf("no module tree where a distribution keeps it: %v", err)
	}
	cli, err := clitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	// A host's lvslab: not the sandbox's guest, not a command forwarded into it.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "LVSLAB_GUEST=") && !strings.HasPrefix(kv, "LVSLAB_IN_SANDBOX=") {
			cli.Env = append(cli.Env, kv)
		}
	}
	run := func(args ...string) (string, string, int) {
		t.Helper()
		return lv(t, cli, args...)
	}

	out, _, code := run("version")
	if code != 0 || !strings.Contains(out, "kernel host "+release+" (IPVS)") {
		t.Fatalf("lvslab version does not see this kernel as a host with IPVS:\n%s", out)
	}
	if _, err := os.Stat("/proc/net/ip_vs"); err != nil {
		t.Fatal("detection did not load ip_vs")
	}
	if _, stderr, code := run("up", "scenarios/nat-rr.yaml"); code != 0 || !strings.Contains(stderr, "lab nat-rr is up") {
		t.Fatalf("up: %d %s", code, stderr)
	}
	t.Cleanup(func() { _, _ = cli.Run(context.Background(), "gc") })
	if _, err := os.Stat("/run/netns/clab-nat-rr-director"); err != nil {
		t.Fatalf("the lab is not on this kernel: %v", err)
	}
	mods, _ := os.ReadFile("/proc/modules")
	for _, m := range []string{"ip_vs_rr", "veth", "bridge"} {
		if !bytes.Contains(mods, []byte(m+" ")) {
			t.Errorf("module %s was not loaded", m)
		}
	}
	var seq []string
	for range 4 {
		out, _, code := run("exec", "client", "--", "curl", "-s", "--max-time", "5", "http://203.0.113.1/")
		if code != 0 {
			t.Fatalf("curl exit %d", code)
		}
		seq = append(seq, strings.TrimSpace(out))
	}
	if seq[0] == seq[1] || seq[0] != seq[2] || seq[1] != seq[3] {
		t.Errorf("answers %v do not alternate", seq)
	}
	if out, _, _ := run("status"); !strings.Contains(out, "lab nat-rr (runtime netns)") || !strings.Contains(out, "TCP  203.0.113.1:80 rr") {
		t.Errorf("status:\n%s", out)
	}
	if _, stderr, code := run("down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	if m, _ := filepath.Glob("/run/netns/clab-nat-rr-*"); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
	if _, err := os.Stat("/run/lvslab"); err == nil {
		t.Error("/run/lvslab left behind")
	}
	if out, _, _ := run("sandbox", "status"); !strings.Contains(out, "not running") {
		t.Errorf("a sandbox kernel was started on a host with IPVS: %s", out)
	}
}
