// Package clabrt is the containerlab runtime: a lab's nodes as Docker containers
// deployed by containerlab's own Go packages (github.com/srl-labs/containerlab
// core), named and labelled as containerlab names them, so that a containerlab
// user's habits work on them (docker exec -it clab-<lab>-<node>, containerlab
// inspect). containerlab links each container's network namespace at
// /run/netns/clab-<lab>-<node>, the name the netns runtime uses: everything
// lvslab does inside a node (apply, web servers, verify) works on both.
package clabrt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	dockerC "github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
	"github.com/srl-labs/containerlab/core"
	clabruntime "github.com/srl-labs/containerlab/runtime"
	"github.com/vishvananda/netlink"

	"github.com/lvslab/lvslab/pkg/clab"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/topo"
)

// Owner is the clab-owner label lvslab's labs carry: gc finds leftovers by it.
const Owner = "lvslab"

// Containerlab deploys a topology's nodes as containers. Linux nodes run Image
// (unless the topology names one); bridge nodes are Linux bridges lvslab makes
// first (containerlab's bridge kind expects one), named by BridgeName.
type Containerlab struct {
	// Host is the Docker API endpoint (unix:///run/...). containerlab's docker
	// runtime reads it from DOCKER_HOST only, so Deploy and Destroy set that
	// variable for this process when Host is not empty.
	Host  string
	Image string // the node image, built by lvslab image build
	Dir   string // where the topology containerlab deploys is written (the lab's directory)
	// Timeout bounds each container operation.
	Timeout time.Duration
	// NoEngine: the engine is gone, and the containers with it; Destroy
	// removes only the bridges and namespace links.
	NoEngine bool
}

// Client returns an API client of the runtime's engine.
func (c Containerlab) Client() (*dockerC.Client, error) {
	opts := []dockerC.Opt{dockerC.FromEnv, dockerC.WithAPIVersionNegotiation()}
	if c.Host != "" {
		opts = append(opts, dockerC.WithHost(c.Host))
	}
	return dockerC.NewClientWithOpts(opts...)
}

// Name implements topo.Runtime.
func (Containerlab) Name() lab.Runtime { return lab.RuntimeContainerlab }

// NodeNamespaces implements topo.Runtime: linux nodes get clab-<lab>-<node>,
// which containerlab links to the container's namespace; a bridge lives in the
// namespace of the engine's host and has no namespace of its own ("").
func (c Containerlab) NodeNamespaces(t *topo.Topology) ([]state.Node, error) {
	var nodes []state.Node
	for _, n := range t.NodeNames() {
		k := t.Nodes[n].Kind
		ns := ""
		if k != "bridge" {
			ns = topo.NSName(t.Name, n)
			if _, err := os.Stat(filepath.Join(node.NetnsDir, ns)); err == nil {
				return nil, fmt.Errorf("lab %q: namespace %s already exists and is not lvslab's record of this lab; remove it or rename the lab", t.Name, ns)
			}
		}
		nodes = append(nodes, state.Node{Name: n, Kind: k, Namespace: ns})
	}
	return nodes, nil
}

// Map is the containerlab lab Deploy hands to containerlab (pkg/clab): the
// file's nodes and links, linux nodes in lvslab's node image (never pulled)
// unless the file names another, no management interface, and bridges and
// their ports under lab-unique names.
func (c Containerlab) Map(t *topo.Topology) (*clab.Lab, error) {
	return clab.Map(t, t.Name, clab.Options{Image: c.Image})
}

// Deploy implements topo.Runtime: the bridges first, then containerlab's deploy
// of the rendered topology. On failure it removes what it made.
func (c Containerlab) Deploy(ctx context.Context, t *topo.Topology) error {
	nodes, err := c.NodeNamespaces(t)
	if err != nil {
		return err
	}
	if err := c.deploy(ctx, t); err != nil {
		return errors.Join(fmt.Errorf("deploy %s in containers: %w", t.Name, err), c.Destroy(context.WithoutCancel(ctx), nodes))
	}
	return nil
}

func (c Containerlab) deploy(ctx context.Context, t *topo.Topology) error {
	l, err := c.Map(t)
	if err != nil {
		return err
	}
	for _, b := range l.Bridges {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: b.Name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("bridge %s (%s): add: %w", b.Node, b.Name, err)
		}
		if err := netlink.LinkSetAlias(br, b.Alias); err != nil {
			return fmt.Errorf("bridge %s (%s): alias: %w", b.Node, b.Name, err)
		}
		if err := netlink.LinkSetUp(br); err != nil {
			return fmt.Errorf("bridge %s (%s): up: %w", b.Node, b.Name, err)
		}
	}
	if err := os.MkdirAll(c.Dir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(c.Dir, t.Name+".clab.yml")
	if err := l.WriteFile(file); err != nil {
		return err
	}
	cl, err := c.lab(core.WithTopoPath(file, nil))
	if err != nil {
		return err
	}
	opts, err := core.NewDeployOptions(uint(len(t.Nodes)))
	if err != nil {
		return err
	}
	missing := c.missingImages(ctx, l)
	if _, err := cl.Deploy(ctx, opts); err != nil {
		if len(missing) > 0 {
			return fmt.Errorf("containerlab: %w (%s: not in the engine, so containerlab tried to pull it)", err, strings.Join(missing, "; "))
		}
		return fmt.Errorf("containerlab: %w", err)
	}
	return nil
}

// missingImages names, node by node, the images the engine does not have.
func (c Containerlab) missingImages(ctx context.Context, l *clab.Lab) []string {
	cli, err := c.Client()
	if err != nil {
		return nil
	}
	defer cli.Close()
	var out []string
	for _, n := range l.Nodes {
		if _, err := cli.ImageInspect(ctx, n.Image); err != nil {
			out = append(out, fmt.Sprintf("node %s: image %s", n.Name, n.Image))
		}
	}
	return out
}

func (c Containerlab) lab(opts ...core.ClabOption) (*core.CLab, error) {
	if c.Host != "" {
		// containerlab's docker runtime takes its endpoint from the environment.
		if err := os.Setenv("DOCKER_HOST", c.Host); err != nil {
			return nil, err
		}
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	opts = append([]core.ClabOption{
		core.WithTimeout(timeout), // without it, containerlab's deadlines are zero
		core.WithRuntime("docker", &clabruntime.RuntimeConfig{Timeout: timeout}),
		core.WithLabOwner(Owner),
	}, opts...)
	return core.NewContainerLab(opts...)
}

// labName is the lab of a record's nodes: clab-<lab>-<node>.
func labName(nodes []state.Node) (string, bool) {
	for _, n := range nodes {
		if n.Namespace != "" {
			return strings.TrimSuffix(strings.TrimPrefix(n.Namespace, "clab-"), "-"+n.Name), true
		}
	}
	return "", false
}

// Leftovers names the labs whose containers (lvslab's label) or bridges
// (lvslab's ifalias) still exist: after a crash, or a record lost.
func (c Containerlab) Leftovers(ctx context.Context) ([]string, error) {
	seen := map[string]bool{}
	if !c.NoEngine {
		cli, err := c.Client()
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		if _, err := cli.Ping(ctx); err == nil {
			cs, err := cli.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", clab.LabelLab))})
			if err != nil {
				return nil, fmt.Errorf("list lvslab's containers: %w", err)
			}
			for _, ct := range cs {
				seen[ct.Labels[clab.LabelLab]] = true
			}
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if lab, ok := strings.CutPrefix(l.Attrs().Alias, "lvslab lab="); ok {
			name, _, _ := strings.Cut(lab, " ")
			seen[name] = true
		}
	}
	var out []string
	for name := range seen {
		if name != "" {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// DestroyLab removes a lab known only by its name: its containers, the
// bridges whose alias names it (and their ports with them), namespace links.
func (c Containerlab) DestroyLab(ctx context.Context, name string) error {
	var errs []error
	if !c.NoEngine {
		cl, err := c.lab(core.WithLabNameOnly(name))
		if err == nil {
			err = cl.Destroy(ctx, core.WithDestroyCleanup())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("containerlab destroy %s: %w", name, err))
		}
	}
	links, err := netlink.LinkList()
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if a := l.Attrs().Alias; strings.HasPrefix(a, "lvslab lab="+name+" ") {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("bridge %s: %w", l.Attrs().Name, err))
			}
		}
	}
	ents, _ := os.ReadDir(node.NetnsDir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "clab-"+name+"-") && e.Type()&os.ModeSymlink != 0 {
			if err := os.Remove(filepath.Join(node.NetnsDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Destroy implements topo.Runtime: containerlab's destroy of the lab's
// containers (found by its labels, so a lab whose deploy was cut short goes
// too), its lab directory, the bridges and any namespace link left behind.
// Nodes already gone are not an error.
func (c Containerlab) Destroy(ctx context.Context, nodes []state.Node) error {
	name, ok := labName(nodes)
	if !ok {
		return nil
	}
	var errs []error
	if !c.NoEngine {
		cl, err := c.lab(core.WithLabNameOnly(name))
		if err == nil {
			err = cl.Destroy(ctx, core.WithDestroyCleanup())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("containerlab destroy %s: %w", name, err))
		}
	}
	for _, n := range nodes {
		if n.Kind == "bridge" {
			if l, err := netlink.LinkByName(clab.BridgeName(name, n.Name)); err == nil {
				if err := netlink.LinkDel(l); err != nil {
					errs = append(errs, fmt.Errorf("bridge %s: %w", n.Name, err))
				}
			}
			continue
		}
		p := filepath.Join(node.NetnsDir, n.Namespace)
		if _, err := os.Lstat(p); err == nil {
			if err := os.Remove(p); err != nil {
				errs = append(errs, fmt.Errorf("node %s: %w", n.Name, err))
			}
		}
	}
	_ = os.Remove(filepath.Join(c.Dir, name+".clab.yml"))
	return errors.Join(errs...)
}

var _ topo.Runtime = Containerlab{}

// Exec runs argv inside a node's container as docker exec does (the
// container's file system, hostname and processes, not only its network
// namespace), with stdin when not nil, and returns its exit status.
func (c Containerlab) Exec(ctx context.Context, name string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	cli, err := c.Client()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ex, err := cli.ContainerExecCreate(ctx, name, container.ExecOptions{
		Cmd: argv, AttachStdin: stdin != nil, AttachStdout: true, AttachStderr: true,
	})
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	defer att.Close()
	if stdin != nil {
		go func() {
			_, _ = io.Copy(att.Conn, stdin)
			_ = att.CloseWrite()
		}()
	}
	if _, err := stdcopy.StdCopy(stdout, stderr, att.Reader); err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	st, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	return st.ExitCode, nil
}

// TTY is a terminal for ExecTTY: its first size, and later sizes.
type TTY struct {
	Rows, Cols uint
	Resize     <-chan [2]uint // rows, cols; nil when the size never changes
}

// ExecTTY runs argv with env inside a node's container on a pseudo-terminal
// the engine allocates, as docker exec -it does: stdin is the terminal's
// input (Ctrl-C there reaches the container's process as the terminal's
// interrupt), stdout gets what the terminal shows, and size changes follow
// tty.Resize. It returns argv's exit status.
func (c Containerlab) ExecTTY(ctx context.Context, name string, argv, env []string, tty TTY, stdin io.Reader, stdout io.Writer) (int, error) {
	cli, err := c.Client()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	opts := container.ExecOptions{
		Cmd: argv, Env: env, Tty: true, AttachStdin: true, AttachStdout: true, AttachStderr: true,
	}
	if tty.Rows > 0 && tty.Cols > 0 {
		opts.ConsoleSize = &[2]uint{tty.Rows, tty.Cols}
	}
	ex, err := cli.ContainerExecCreate(ctx, name, opts)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{Tty: true, ConsoleSize: opts.ConsoleSize})
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	defer att.Close()
	// The size given at creation does not reach the terminal on every engine
	// (API versions before 1.42 drop it): set it once the process runs, as
	// docker exec -it does, trying again while the engine is still starting it.
	if tty.Rows > 0 && tty.Cols > 0 {
		for i := range 10 {
			err := cli.ContainerExecResize(ctx, ex.ID, container.ResizeOptions{Height: tty.Rows, Width: tty.Cols})
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(time.Duration(i+1) * 10 * time.Millisecond):
			}
		}
	}
	if tty.Resize != nil {
		rctx, stop := context.WithCancel(ctx)
		defer stop()
		go func() {
			for {
				select {
				case sz := <-tty.Resize:
					_ = cli.ContainerExecResize(rctx, ex.ID, container.ResizeOptions{Height: sz[0], Width: sz[1]})
				case <-rctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		_, _ = io.Copy(att.Conn, stdin)
		_ = att.CloseWrite()
	}()
	// A terminal's output is one stream: no stdout/stderr multiplexing.
	if _, err := io.Copy(stdout, att.Reader); err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	st, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	return st.ExitCode, nil
}

// StartIn starts argv with env inside a container, as docker exec -d does: in
// every namespace and the cgroup of the container, so that docker exec and
// docker top see it. With ready it returns once the process has printed the
// line ready on its standard output, and fails with what it printed if it
// ends first; the process must stop writing to that output then (the exec's
// stream is closed). It returns the process's PID in the engine's PID
// namespace (lvslab's, where it runs beside the engine).
func (c Containerlab) StartIn(ctx context.Context, name string, argv, env []string, ready string) (int, error) {
	cli, err := c.Client()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	ex, err := cli.ContainerExecCreate(ctx, name, container.ExecOptions{
		Cmd: argv, Env: env, AttachStdout: ready != "", AttachStderr: ready != "", Detach: ready == "",
	})
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", name, err)
	}
	if ready == "" {
		if err := cli.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{Detach: true}); err != nil {
			return 0, fmt.Errorf("exec in %s: %w", name, err)
		}
	} else if err := waitLine(ctx, cli, ex.ID, ready); err != nil {
		return 0, fmt.Errorf("exec %s in %s: %w", argv[0], name, err)
	}
	// The PID is known once the engine has started the process.
	for {
		st, err := cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return 0, fmt.Errorf("exec in %s: %w", name, err)
		}
		switch {
		case st.Pid != 0 && st.Running:
			return st.Pid, nil
		case !st.Running && st.ExitCode != 0:
			return 0, fmt.Errorf("exec %s in %s: exited with status %d", argv[0], name, st.ExitCode)
		case !st.Running && st.Pid != 0:
			return st.Pid, nil // done already, and well
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("exec in %s: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitLine attaches to an exec and reads its output until a line equals
// ready; the output up to there is the error when the stream ends first.
func waitLine(ctx context.Context, cli *dockerC.Client, id, ready string) error {
	att, err := cli.ContainerExecAttach(ctx, id, container.ExecAttachOptions{})
	if err != nil {
		return err
	}
	defer att.Close()
	stop := context.AfterFunc(ctx, att.Close) // a read in progress ends with ctx
	defer stop()
	pr, pw := io.Pipe()
	go func() {
		_, err := stdcopy.StdCopy(pw, pw, att.Reader)
		pw.CloseWithError(err)
	}()
	defer pr.Close()
	var out []string
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if sc.Text() == ready {
			return nil
		}
		out = append(out, sc.Text())
	}
	st, ierr := cli.ContainerExecInspect(ctx, id)
	msg := strings.TrimSpace(strings.Join(out, "\n"))
	if ierr == nil && !st.Running {
		return fmt.Errorf("exited with status %d: %s", st.ExitCode, msg)
	}
	return fmt.Errorf("ended its output before %q: %s", ready, msg)
}
