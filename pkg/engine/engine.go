// Package engine runs the Docker engine that container labs use: dockerd and a
// containerd of its own, started by lvslab inside the sandbox kernel (this
// project's hosts cannot run privileged containers, and their kernels have no
// IPVS). Everything the engine keeps lives under one run directory lvslab owns:
// its sockets, pid files, logs and configuration, and its data root on a tmpfs
// of its own, so that stopping it (or gc after a crash) leaves nothing behind.
// It never uses a daemon, socket or directory of the host's own Docker.
//
// The engine takes dockerd's fast path: no iptables rules, no default bridge
// (--iptables=false --ip6tables=false --bridge=none). Labs wire their nodes
// themselves, and in the sandbox kernel every process start costs about 0.1 s.
package engine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/client"
	"github.com/lvslab/lvslab/pkg/kmod"
	"golang.org/x/sys/unix"
)

// DefaultDir is the engine's run directory. Inside the sandbox kernel /run is
// the guest's own tmpfs, never the host's.
const DefaultDir = "/run/lvslab/engine"

// CgroupParent is the cgroup (under the cgroup2 root) that holds every
// container of the engine, so that gc finds them without touching any other
// engine's.
const CgroupParent = "lvslab-engine"

// Errors callers can test for with errors.Is.
var (
	// ErrNotInstalled: dockerd, containerd or runc is missing.
	ErrNotInstalled = errors.New("the Docker engine is not installed (apt-get install docker.io)")
	// ErrRunning: an engine already runs in the run directory.
	ErrRunning = errors.New("an engine is already running")
	// ErrNotRunning: no engine runs in the run directory.
	ErrNotRunning = errors.New("no engine is running")
)

// Config says where the engine lives and what it runs. The zero value is the
// default engine.
type Config struct {
	Dir        string        // run directory; DefaultDir when empty
	Dockerd    string        // dockerd binary; "dockerd" from PATH when empty
	Containerd string        // containerd binary; "containerd" from PATH when empty
	ModulesDir string        // kernel module tree; found as ModuleDir does when empty
	Timeout    time.Duration // how long to wait for the API to answer; 60 s when zero
}

func (c *Config) defaults() {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	c.Dir = filepath.Clean(c.Dir)
	if c.Dockerd == "" {
		c.Dockerd = "dockerd"
	}
	if c.Containerd == "" {
		c.Containerd = "containerd"
	}
	if c.Timeout == 0 {
		c.Timeout = 60 * time.Second
	}
}

// Modules are the kernel modules the engine and container labs need: overlay
// for the overlay2 storage driver, veth and bridge for the links between
// nodes. dockerd's own modprobe cannot find the sandbox kernel's modules, so
// the engine loads them first.
func Modules() []string { return []string{"overlay", "veth", "bridge"} }

// layout names the files under a run directory.
type layout string

func (l layout) path(name string) string { return filepath.Join(string(l), name) }
func (l layout) data() string            { return l.path("data") } // a tmpfs: dockerd's and containerd's roots
func (l layout) dockerSock() string      { return l.path("docker.sock") }
func (l layout) containerdSock() string  { return l.path("containerd.sock") }
func (l layout) pidFile(d string) string { return l.path(d + ".pid") }
func (l layout) logFile(d string) string { return l.path(d + ".log") }

// Host is the address of the engine's API in a run directory.
func Host(dir string) string { return "unix://" + layout(filepath.Clean(dir)).dockerSock() }

// Engine is a running engine.
type Engine struct {
	dir    string
	client *client.Client
}

// Client is a Docker API client connected to the engine.
func (e *Engine) Client() *client.Client { return e.client }

// Dir is the engine's run directory.
func (e *Engine) Dir() string { return e.dir }

// Start starts an engine in cfg.Dir and returns once its API answers. Leftovers
// of an engine that died there are removed first; a live one is an error
// (ErrRunning). The engine runs in a session of its own and outlives the
// command that started it, until Stop or GC. On failure nothing is left, and
// the error quotes the end of the daemon's log.
func Start(ctx context.Context, cfg Config) (*Engine, error) {
	cfg.defaults()
	l := layout(cfg.Dir)
	bins, err := binaries(cfg)
	if err != nil {
		return nil, err
	}
	if pids := Processes(cfg.Dir); len(pids) > 0 {
		return nil, fmt.Errorf("engine: %w in %s (pids %v): lvslab gc stops it", ErrRunning, cfg.Dir, pids)
	}
	if err := GC(ctx, cfg.Dir); err != nil {
		return nil, fmt.Errorf("engine: remove a dead engine's leftovers: %w", err)
	}
	var spawned []*daemon
	ok := false
	defer func() {
		if ok {
			return
		}
		// What this call started, by pid (whatever its program turned out to
		// be), then whatever the engine's own processes left.
		for _, d := range spawned {
			_ = terminate(context.WithoutCancel(ctx), d.cmd.Process.Pid, 5*time.Second)
		}
		_ = GC(context.WithoutCancel(ctx), cfg.Dir)
	}()
	if err := prepare(cfg); err != nil {
		return nil, err
	}
	cd, err := spawn(l, "containerd", bins["containerd"], "--config", l.path("containerd.toml"))
	if err != nil {
		return nil, err
	}
	spawned = append(spawned, cd)
	if err := cd.wait(ctx, cfg.Timeout, func(context.Context) error {
		_, err := os.Stat(l.containerdSock())
		return err
	}); err != nil {
		return nil, err
	}
	dd, err := spawn(l, "dockerd", bins["dockerd"],
		"--config-file", l.path("daemon.json"),
		"--containerd", l.containerdSock(),
		"--data-root", l.path("data/docker"),
		"--exec-root", l.path("exec"),
		"--pidfile", l.pidFile("dockerd"),
		"--host", Host(cfg.Dir),
		"--cgroup-parent", "/"+CgroupParent,
		"--iptables=false", "--ip6tables=false", "--bridge=none", "--ip-forward=false", "--ip-masq=false",
	)
	if err != nil {
		return nil, err
	}
	spawned = append(spawned, dd)
	cli, err := client.NewClientWithOpts(client.WithHost(Host(cfg.Dir)), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("engine: client: %w", err)
	}
	if err := dd.wait(ctx, cfg.Timeout, func(ctx context.Context) error {
		_, err := cli.Ping(ctx)
		return err
	}); err != nil {
		cli.Close()
		return nil, err
	}
	ok = true
	return &Engine{dir: cfg.Dir, client: cli}, nil
}

// Connect returns the engine that runs in dir (ErrNotRunning when none does).
func Connect(ctx context.Context, dir string) (*Engine, error) {
	dir = filepath.Clean(dir)
	if len(Processes(dir)) == 0 {
		return nil, fmt.Errorf("engine: %w in %s", ErrNotRunning, dir)
	}
	cli, err := client.NewClientWithOpts(client.WithHost(Host(dir)), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("engine: client: %w", err)
	}
	if _, err := cli.Ping(ctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("engine in %s does not answer (lvslab gc removes it): %w", dir, err)
	}
	return &Engine{dir: dir, client: cli}, nil
}

// Ensure connects to the engine in cfg.Dir, or starts one; started says which.
func Ensure(ctx context.Context, cfg Config) (e *Engine, started bool, err error) {
	cfg.defaults()
	if e, err := Connect(ctx, cfg.Dir); err == nil {
		return e, false, nil
	} else if !errors.Is(err, ErrNotRunning) {
		return nil, false, err
	}
	e, err = Start(ctx, cfg)
	return e, err == nil, err
}

// Close closes the engine's client; the engine keeps running.
func (e *Engine) Close() error { return e.client.Close() }

// Stop stops the engine: dockerd first (it stops its containers), then
// containerd, then whatever is left of them; it unmounts everything under the
// run directory and removes it. Safe to repeat.
func (e *Engine) Stop(ctx context.Context) error {
	e.client.Close()
	return GC(ctx, e.dir)
}

// binaries finds the programs the engine runs, reporting every missing one.
func binaries(cfg Config) (map[string]string, error) {
	found := map[string]string{}
	var missing []string
	for name, bin := range map[string]string{
		"dockerd": cfg.Dockerd, "containerd": cfg.Containerd,
		"runc": "runc", "containerd-shim-runc-v2": "containerd-shim-runc-v2",
	} {
		p, err := exec.LookPath(bin)
		if err != nil {
			missing = append(missing, bin)
			continue
		}
		found[name] = p
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, fmt.Errorf("engine: %s not found: %w", strings.Join(missing, ", "), ErrNotInstalled)
	}
	return found, nil
}

// prepare makes the run directory, its tmpfs and configuration, loads the
// kernel modules and makes sure cgroup2 is mounted.
func prepare(cfg Config) error {
	l := layout(cfg.Dir)
	if err := os.MkdirAll(l.data(), 0o700); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := unix.Mount("tmpfs", l.data(), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0700"); err != nil {
		return fmt.Errorf("engine: mount a tmpfs on %s: %w", l.data(), err)
	}
	if err := loadModules(cfg.ModulesDir); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	if err := mountCgroup2(); err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	// dockerd 20.10 writes its identity key to /etc/docker/key.json unless the
	// configuration file (not the command line) names another place, and reads
	// /etc/docker/daemon.json unless given a file of its own.
	daemonJSON := fmt.Sprintf("{\"deprecated-key-path\": %q}\n", l.path("key.json"))
	// A containerd of lvslab's own rather than the one dockerd would start: its
	// opt plugin would create /opt/containerd on the host's file system (which
	// the sandbox kernel shares), and plugins a lab never uses start faster
	// disabled.
	containerdTOML := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = %q
[plugins."io.containerd.internal.v1.opt"]
  path = %q
`, l.path("data/containerd"), l.path("containerd"), l.containerdSock(), l.path("data/opt"))
	for name, text := range map[string]string{"daemon.json": daemonJSON, "containerd.toml": containerdTOML} {
		if err := os.WriteFile(l.path(name), []byte(text), 0o600); err != nil {
			return fmt.Errorf("engine: %w", err)
		}
	}
	return nil
}

// ModuleDir finds the running kernel's module tree: dir when given, then
// $LVSLAB_MODULES, /lib/modules/<release>, and the user-mode-linux package's
// /usr/lib/uml/modules/<release> (where the sandbox kernel's modules are).
func ModuleDir(dir string) string {
	if dir != "" {
		return dir
	}
	std := kmod.DefaultDir()
	for _, d := range []string{os.Getenv("LVSLAB_MODULES"), std, filepath.Join("/usr/lib/uml/modules", filepath.Base(std))} {
		if _, err := os.Stat(filepath.Join(d, "modules.dep")); d != "" && err == nil {
			return d
		}
	}
	return std
}

// loadModules loads Modules that are not loaded (or built in) already.
func loadModules(dir string) error {
	var need []string
	for _, m := range Modules() {
		if _, err := os.Stat(filepath.Join("/sys/module", m)); err != nil {
			need = append(need, m)
		}
	}
	if len(need) == 0 {
		return nil
	}
	l := &kmod.Loader{Dir: ModuleDir(dir)}
	return l.Load(need...)
}

// mountCgroup2 mounts the cgroup2 hierarchy on /sys/fs/cgroup when nothing is
// mounted there (as in a fresh sandbox kernel); a host's own cgroup mounts are
// left as they are.
func mountCgroup2() error {
	const root = "/sys/fs/cgroup"
	mounts, err := mountPoints()
	if err != nil {
		return err
	}
	if slices.Contains(mounts, root) {
		return nil
	}
	if err := unix.Mount("cgroup2", root, "cgroup2", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount cgroup2 on %s: %w", root, err)
	}
	return nil
}

// daemon is one of the engine's processes, as started.
type daemon struct {
	name   string
	log    string
	cmd    *exec.Cmd
	exited chan struct{}
}

// spawn starts a daemon in a session of its own (it outlives lvslab, and a
// signal to lvslab's process group does not reach it), its output in its log
// file and not in lvslab's (a command in the sandbox ends only when its output
// does).
func spawn(l layout, name, bin string, args ...string) (*daemon, error) {
	log, err := os.OpenFile(l.logFile(name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("engine: start %s: %w", bin, err)
	}
	if name == "containerd" {
		if err := os.WriteFile(l.pidFile(name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	d := &daemon{name: name, log: l.logFile(name), cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	return d, nil
}

// wait polls ready until it succeeds, the daemon exits, timeout passes or ctx
// ends; the errors quote the end of the daemon's log.
func (d *daemon) wait(ctx context.Context, timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(pctx)
		pcancel()
		if last == nil {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("engine: %s failed to start (%s); the end of %s:\n%s",
				d.name, d.cmd.ProcessState, d.log, Tail(d.log, 20))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("engine: %s did not answer within %s (%v); the end of %s:\n%s",
					d.name, timeout, last, d.log, Tail(d.log, 20))
			}
			return fmt.Errorf("engine: start %s: %w", d.name, ctx.Err())
		case <-tick.C:
		}
	}
}

// Tail returns the last n lines of a file (a log), indented for quoting.
func Tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return "  (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}

// daemonNames are the engine's programs, as their argv[0] ends.
func daemonNames() []string {
	return []string{"dockerd", "containerd", "containerd-shim-runc-v2", "docker-proxy"}
}

// Processes lists the engine's processes in dir: those of daemonNames whose
// command line names a file under dir. It finds an engine whose lvslab died.
func Processes(dir string) []int {
	dir = filepath.Clean(dir) + "/"
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !slices.Contains(daemonNames(), filepath.Base(argv[0])) {
			continue
		}
		if slices.ContainsFunc(argv[1:], func(a string) bool { return strings.Contains(a, dir) }) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// GC stops the engine in dir, if any, and removes what it left: processes
// (dockerd and containerd are asked to stop first, then killed), containers'
// cgroups, mounts under dir, and dir itself. It is Stop for an engine whose
// lvslab is gone, and safe to repeat.
func GC(ctx context.Context, dir string) error {
	dir = filepath.Clean(dir)
	var errs []error
	// Gracefully, in order: dockerd stops its containers, then containerd.
	for _, name := range []string{"dockerd", "containerd"} {
		for _, pid := range Processes(dir) {
			if comm(pid) == name {
				errs = append(errs, terminate(ctx, pid, 20*time.Second))
			}
		}
	}
	for _, pid := range Processes(dir) { // shims and anything else
		errs = append(errs, terminate(ctx, pid, 0))
	}
	errs = append(errs, killCgroups(ctx))
	errs = append(errs, unmountUnder(dir))
	if mounts, err := mountsUnder(dir); err != nil || len(mounts) > 0 {
		// Never remove files under a mount point: it could reach anything.
		return errors.Join(append(errs, fmt.Errorf("engine: %s still has mounts %v (%v); not removing it", dir, mounts, err))...)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("engine: %w", err))
	}
	return errors.Join(errs...)
}

// comm is a process's program name as its argv[0] ends ("" when it is gone).
func comm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	argv0, _, _ := bytes.Cut(b, []byte{0})
	return filepath.Base(string(argv0))
}

// terminate sends SIGTERM and waits up to grace for the process to end, then
// kills it and waits for it to be gone.
func terminate(ctx context.Context, pid int, grace time.Duration) error {
	sig := unix.SIGTERM
	if grace == 0 {
		sig = unix.SIGKILL
	}
	if err := unix.Kill(pid, sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return fmt.Errorf("engine: signal %d: %w", pid, err)
	}
	if gone(ctx, pid, grace) {
		return nil
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	if gone(context.WithoutCancel(ctx), pid, 10*time.Second) {
		return nil
	}
	return fmt.Errorf("engine: process %d did not end", pid)
}

// gone waits up to d for a process to end (a zombie counts as ended).
func gone(ctx context.Context, pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		// The state follows the command name in parentheses.
		if i := bytes.LastIndexByte(b, ')'); i > 0 && len(b) > i+2 && (b[i+2] == 'Z' || b[i+2] == 'X') {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killCgroups kills every process left in the engine's containers' cgroups
// and removes those cgroups.
func killCgroups(ctx context.Context) error {
	parent := filepath.Join("/sys/fs/cgroup", CgroupParent)
	ents, err := os.ReadDir(parent)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		cg := filepath.Join(parent, e.Name())
		_ = os.WriteFile(filepath.Join(cg, "cgroup.kill"), []byte("1"), 0)
		errs = append(errs, removeCgroup(ctx, cg))
	}
	errs = append(errs, removeCgroup(ctx, parent))
	return errors.Join(errs...)
}

// removeCgroup removes an empty cgroup, waiting briefly for killed processes
// to leave it.
func removeCgroup(ctx context.Context, cg string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := unix.Rmdir(cg)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("engine: remove cgroup %s: %w", cg, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountPoints lists this mount namespace's mount points.
func mountPoints() ([]string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 {
			out = append(out, unescape(fields[4]))
		}
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsUnder lists the mount points at or under dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	all, err := mountPoints()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range all {
		if m == dir || strings.HasPrefix(m, dir+"/") {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out), nil
}

// unmountUnder unmounts everything at or under dir, deepest first.
func unmountUnder(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	var errs []error
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("engine: unmount %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}
