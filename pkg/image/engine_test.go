package image_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/lvslab/lvslab/internal/clitest"
	"github.com/lvslab/lvslab/pkg/engine"
	"github.com/lvslab/lvslab/pkg/image"
	"github.com/lvslab/lvslab/pkg/sandbox"
)

// requireEngine skips a test that needs the real engine, unless make engine
// asks for it (LVSLAB_REQUIRE_ENGINE): there it fails instead.
func requireEngine(t *testing.T) string {
	t.Helper()
	skip := t.Skip
	if os.Getenv("LVSLAB_REQUIRE_ENGINE") != "" {
		skip = t.Fatal
	}
	if testing.Short() {
		skip("starts the Docker engine: runs inside the sandbox kernel (make engine)")
	}
	if os.Getenv(sandbox.EnvInSandbox) == "" {
		skip("starts the Docker engine: runs inside the sandbox kernel (make engine)")
	}
	if os.Getuid() != 0 {
		skip("needs root")
	}
	cli, err := clitest.Default()
	if err != nil {
		t.Fatal(err)
	}
	return cli.Bin
}

// dir is the engine's run directory for these tests: in the guest's own /run.
const dir = "/run/lvslab/engine-test"

// TestEngineNodeImage starts the engine, imports the node image, runs a
// privileged container without a network from it, runs the lab's tools in it,
// removes it, stops the engine and checks that nothing is left.
func TestEngineNodeImage(t *testing.T) {
	self := requireEngine(t)
	ctx := t.Context()

	t0 := time.Now()
	e, err := engine.Start(ctx, engine.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("engine started in %.2fs", time.Since(t0).Seconds())
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = e.Stop(context.Background())
		}
	})
	cli := e.Client()
	if v, err := cli.ServerVersion(ctx); err == nil {
		t.Logf("dockerd %s, API %s (client %s)", v.Version, v.APIVersion, cli.ClientVersion())
	}
	if _, err := engine.Start(ctx, engine.Config{Dir: dir}); !errors.Is(err, engine.ErrRunning) {
		t.Errorf("a second engine in %s: %v, want ErrRunning", dir, err)
	}

	ref := image.Ref("test")
	if err := image.Check(ctx, cli, ref); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("check before import: %v, want ErrNotFound", err)
	}
	if _, err := cli.ContainerCreate(ctx, &container.Config{Image: ref}, nil, nil, nil, ""); err == nil {
		t.Error("a container from a missing image was created")
	} else {
		t.Logf("a container from a missing image: %v", err)
	}

	t0 = time.Now()
	st, err := image.Import(ctx, cli, ref, image.Options{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %s imported in %.2fs: %d files, %.1f MB", ref, time.Since(t0).Seconds(), st.Files, float64(st.Bytes)/1e6)
	if err := image.Check(ctx, cli, ref); err != nil {
		t.Fatal(err)
	}
	inspect, err := cli.ImageInspect(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(inspect.Config.Cmd, image.Cmd()) {
		t.Errorf("image command %q, want %q", inspect.Config.Cmd, image.Cmd())
	}
	t.Logf("image size %.1f MB", float64(inspect.Size)/1e6)

	id := runNode(t, cli, ref, "lvslab-test-node")

	for _, x := range []struct {
		argv []string
		want []string // in its output (stdout and stderr)
	}{
		{[]string{"ipvsadm", "-Ln"}, []string{"IP Virtual Server version", "Prot LocalAddress:Port Scheduler Flags"}},
		{[]string{"ip", "addr"}, []string{"lo:", "127.0.0.1/8"}},
		{[]string{"curl", "--version"}, []string{"curl 7.", "http"}},
		{[]string{"keepalived", "--version"}, []string{"Keepalived v2."}},
		{[]string{"iptables", "-V"}, []string{"(legacy)"}},
		{[]string{"iptables", "-t", "mangle", "-A", "PREROUTING", "-p", "tcp", "-m", "multiport", "--dports", "80,443", "-j", "MARK", "--set-mark", "10"}, nil},
		{[]string{"tcpdump", "--version"}, []string{"tcpdump version"}},
		{[]string{"arping", "--help"}, []string{"ARPing"}},
		{[]string{"cat", "/proc/1/cmdline"}, []string{image.SelfPath + "\x00node-init"}},
		// A service of this container's own: its own network namespace.
		{[]string{"ipvsadm", "-A", "-t", "192.0.2.1:80", "-s", "rr"}, nil},
		{[]string{"ipvsadm", "-Ln"}, []string{"TCP  192.0.2.1:80 rr"}},
		// busybox httpd serves a page, curl fetches it, over the container's loopback.
		{[]string{"sh", "-c", "echo hello from httpd > /var/www/index.html && httpd -p 127.0.0.1:8080 -h /var/www && curl -s http://127.0.0.1:8080/"}, []string{"hello from httpd"}},
	} {
		t0 := time.Now()
		r, err := engine.Exec(ctx, cli, id, x.argv)
		if err != nil {
			t.Fatal(err)
		}
		out := r.Stdout + r.Stderr
		t.Logf("%q -> %d in %.2fs\n%s", x.argv, r.Code, time.Since(t0).Seconds(), out)
		if r.Code != 0 && !slices.Contains(x.argv, "--help") {
			t.Errorf("%q: exit status %d", x.argv, r.Code)
		}
		for _, w := range x.want {
			if !strings.Contains(out, w) {
				t.Errorf("%q: output lacks %q", x.argv, w)
			}
		}
	}
	if b, err := os.ReadFile("/proc/net/ip_vs"); err == nil && strings.Contains(string(b), "C0000201:0050") {
		t.Errorf("the container's service is in the guest's own table:\n%s", b)
	}

	t0 = time.Now()
	if err := cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	t.Logf("container removed in %.2fs", time.Since(t0).Seconds())
	if list, err := cli.ContainerList(ctx, container.ListOptions{All: true}); err != nil || len(list) > 0 {
		t.Errorf("containers left: %v %v", list, err)
	}

	// Stop with a container running: dockerd stops it (its init ends on SIGTERM).
	runNode(t, cli, ref, "lvslab-test-running")
	t0 = time.Now()
	stopped = true
	if err := e.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("engine stopped, with a container running, in %.2fs", time.Since(t0).Seconds())
	assertNothingLeft(t, dir)
}

// runNode starts a privileged node container without a network.
func runNode(t *testing.T, cli *client.Client, ref, name string) string {
	t.Helper()
	t0 := time.Now()
	c, err := cli.ContainerCreate(t.Context(), &container.Config{Image: ref},
		&container.HostConfig{Privileged: true, NetworkMode: "none"}, nil, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.ContainerStart(t.Context(), c.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Logf("container %s created and started in %.2fs", name, time.Since(t0).Seconds())
	return c.ID
}

// TestEngineGCAfterCrash: dockerd and containerd die (kill -9) with two
// containers running; GC, as lvslab gc runs it, leaves nothing: the shims,
// the containers' processes, their mounts and cgroups.
func TestEngineGCAfterCrash(t *testing.T) {
	self := requireEngine(t)
	ctx := t.Context()
	e, err := engine.Start(ctx, engine.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.GC(context.Background(), dir) })
	ref := image.Ref("test")
	if _, err := image.Import(ctx, e.Client(), ref, image.Options{Self: self}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"lvslab-test-a", "lvslab-test-b"} {
		runNode(t, e.Client(), ref, name)
	}
	// A started container's init may still be runc's for a moment.
	for i := 0; i < 100 && len(processesOf(image.SelfPath)) != 2; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if inits := processesOf(image.SelfPath); len(inits) != 2 {
		list, _ := e.Client().ContainerList(ctx, container.ListOptions{All: true})
		for _, c := range list {
			t.Logf("%s %s %s", c.Names, c.State, c.Status)
			if logs, err := e.Client().ContainerLogs(ctx, c.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true}); err == nil {
				b, _ := io.ReadAll(logs)
				t.Logf("logs: %q", b)
			}
		}
		t.Fatalf("node inits: %v", inits)
	}
	for _, name := range []string{"dockerd", "containerd"} {
		for _, p := range processesOf(name) {
			pid, _ := strconv.Atoi(strings.SplitN(p, ":", 2)[0])
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.Close()
	t0 := time.Now()
	if err := engine.GC(ctx, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("gc after the crash in %.2fs", time.Since(t0).Seconds())
	assertNothingLeft(t, dir)
	if inits := processesOf(image.SelfPath); len(inits) > 0 {
		t.Errorf("containers' processes left: %v", inits)
	}
}

// TestEngineStartFailures: a dockerd that fails quotes its log; one that never
// answers times out; neither leaves anything behind.
func TestEngineStartFailures(t *testing.T) {
	requireEngine(t)
	bin := t.TempDir()
	for _, c := range []struct {
		name, script string
		timeout      time.Duration
		want         []string
	}{
		{"fails", "#!/bin/sh\necho 'failed to start daemon: boom' >&2\nexit 3\n", 0,
			[]string{"dockerd failed to start", "exit status 3", "failed to start daemon: boom"}},
		{"silent", "#!/bin/sh\necho 'waiting forever'\nexec sleep 631\n", 2 * time.Second,
			[]string{"dockerd did not answer within 2s", "waiting forever"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := filepath.Join(bin, c.name, "dockerd")
			if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(d, []byte(c.script), 0o755); err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			e, err := engine.Start(t.Context(), engine.Config{Dir: dir, Dockerd: d, Timeout: c.timeout})
			if err == nil {
				e.Stop(context.Background())
				t.Fatal("started")
			}
			t.Logf("after %.2fs: %v", time.Since(t0).Seconds(), err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			assertNothingLeft(t, dir)
			if pids := append(processesOf(d), processesOf("sleep")...); len(pids) > 0 {
				t.Errorf("the fake dockerd still runs: %v", pids)
			}
		})
	}
}

// assertNothingLeft checks that no engine process, mount, cgroup or file is left.
func assertNothingLeft(t *testing.T, dir string) {
	t.Helper()
	if pids := engine.Processes(dir); len(pids) > 0 {
		t.Errorf("engine processes left: %v", pids)
	}
	for _, name := range []string{"dockerd", "containerd", "containerd-shim-runc-v2"} {
		if pids := processesOf(name); len(pids) > 0 {
			t.Errorf("%s processes left: %v", name, pids)
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir) {
			t.Errorf("mount left: %s", sc.Text())
		}
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left: %v", dir, err)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", engine.CgroupParent)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("cgroup %s left: %v", engine.CgroupParent, err)
	}
}

// processesOf lists the processes whose command line's first word is prog
// (a path) or ends in /prog (a name), or that run prog as a script.
func processesOf(prog string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for _, a := range argv[:min(2, len(argv))] {
			if a == prog || filepath.Base(a) == prog {
				out = append(out, e.Name()+": "+strings.Join(argv, " "))
				break
			}
		}
	}
	return out
}
