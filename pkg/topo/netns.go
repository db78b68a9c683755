package topo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NSName is the namespace name of a node, as containerlab names its containers.
func NSName(lab, nodeName string) string { return "clab-" + lab + "-" + nodeName }

// Netns is the embedded runtime: one named network namespace per node, veth pairs
// with the file's interface names, and each bridge inside a namespace of its own.
// Nothing is created in the namespace of the process that calls it.
type Netns struct {
	Store state.Store

	beforeLink func(i int) error // test hook: a fault injected before link i is made
}

// Deploy builds the topology. It records the lab before creating anything, and
// removes everything it made if any step fails. scenario is stored in the record.
func (r Netns) Deploy(ctx context.Context, t *Topology, scenario string) (*state.Lab, error) {
	if _, err := r.Store.Load(t.Name); err == nil {
		return nil, fmt.Errorf("lab %q is already up (lvslab down %s)", t.Name, t.Name)
	}
	lab := &state.Lab{Name: t.Name, Runtime: "netns", Topology: AbsPath(t.File), Scenario: AbsPath(scenario)}
	for _, n := range t.NodeNames() {
		ns := NSName(t.Name, n)
		if _, err := os.Stat(filepath.Join(node.NetnsDir, ns)); err == nil {
			return nil, fmt.Errorf("lab %q: namespace %s already exists and is not lvslab's record of this lab; remove it or rename the lab", t.Name, ns)
		}
		lab.Namespaces = append(lab.Namespaces, ns)
		lab.Nodes = append(lab.Nodes, n)
		lab.Kinds = append(lab.Kinds, t.Nodes[n].Kind)
	}
	if err := r.Store.Save(lab); err != nil {
		return nil, err
	}
	if err := r.build(ctx, t); err != nil {
		return nil, errors.Join(fmt.Errorf("deploy %s: %w", t.Name, err), r.Destroy(context.WithoutCancel(ctx), t.Name))
	}
	return lab, nil
}

func (r Netns) build(ctx context.Context, t *Topology) error {
	handles := map[string]*netlink.Handle{}
	fds := map[string]netns.NsHandle{}
	defer func() {
		for _, h := range handles {
			h.Close()
		}
		for _, f := range fds {
			f.Close()
		}
	}()
	for _, name := range t.NodeNames() {
		if err := ctx.Err(); err != nil {
			return err
		}
		ns := NSName(t.Name, name)
		fd, err := newNamedNetns(ns)
		if err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
		fds[name] = fd
		h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("node %s: netlink: %w", name, err)
		}
		handles[name] = h
		if err := quietIPv6(node.New(name, ns)); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
		lo, err := h.LinkByName("lo")
		if err == nil {
			err = h.LinkSetUp(lo)
		}
		if err != nil {
			return fmt.Errorf("node %s: lo up: %w", name, err)
		}
		if t.Nodes[name].Kind == KindBridge {
			br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
			if err := h.LinkAdd(br); err != nil {
				return fmt.Errorf("bridge %s: add: %w", name, err)
			}
			if err := h.LinkSetUp(br); err != nil {
				return fmt.Errorf("bridge %s: up: %w", name, err)
			}
		}
	}
	for i, l := range t.Links {
		if err := ctx.Err(); err != nil {
			return err
		}
		if r.beforeLink != nil {
			if err := r.beforeLink(i); err != nil {
				return err
			}
		}
		v := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: l.A.Iface},
			PeerName:      l.B.Iface,
			PeerNamespace: netlink.NsFd(fds[l.B.Node]),
		}
		if err := handles[l.A.Node].LinkAdd(v); err != nil {
			return fmt.Errorf("link %s-%s: %w", l.A, l.B, err)
		}
		for _, e := range []Endpoint{l.A, l.B} {
			h := handles[e.Node]
			link, err := h.LinkByName(e.Iface)
			if err != nil {
				return fmt.Errorf("link %s: %w", e, err)
			}
			if t.Nodes[e.Node].Kind == KindBridge {
				br, err := h.LinkByName(e.Node)
				if err != nil {
					return fmt.Errorf("link %s: bridge: %w", e, err)
				}
				if err := h.LinkSetMaster(link, br); err != nil {
					return fmt.Errorf("link %s: attach to bridge: %w", e, err)
				}
			}
			if err := h.LinkSetUp(link); err != nil {
				return fmt.Errorf("link %s: up: %w", e, err)
			}
		}
	}
	return nil
}

// quietIPv6 turns off duplicate address detection in a new namespace before its
// links exist, so their IPv6 addresses (link-local ones too) are usable at once
// rather than after a second or two of DAD. Without IPv6 there is nothing to do.
func quietIPv6(n node.Node) error {
	return n.Do(func() error {
		for _, k := range []string{"all", "default"} {
			err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/accept_dad", []byte("0"), 0o644)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("ipv6 accept_dad: %w", err)
			}
		}
		return nil
	})
}

// newNamedNetns creates a network namespace bound at NetnsDir/name and returns a
// handle to it. The calling thread's namespace is restored before returning.
func newNamedNetns(name string) (netns.NsHandle, error) {
	if err := os.MkdirAll(node.NetnsDir, 0o755); err != nil {
		return 0, err
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return 0, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // unshares this thread into the new namespace
	if rerr := netns.Set(orig); rerr != nil {
		// Keep the thread locked: it dies with this goroutine instead of leaking a namespace.
		return 0, errors.Join(err, rerr)
	}
	runtime.UnlockOSThread()
	if err != nil {
		return 0, fmt.Errorf("create namespace %s: %w", name, err)
	}
	return h, nil
}

// Destroy removes a lab: it stops the lab's processes, removes its namespaces (and
// with them every link inside) and its record. It keeps going past failures and
// reports them all; destroying a lab that is already gone is not an error.
func (r Netns) Destroy(ctx context.Context, lab string) error {
	l, err := r.Store.Load(lab)
	if errors.Is(err, state.ErrNoLab) {
		return nil
	}
	if err != nil {
		return err
	}
	var errs []error
	// Every process inside one of the lab's namespaces is the lab's (lvslab made
	// them): this finds what a killed lvslab never recorded, and what exec started.
	procs := append(l.Processes, processesIn(l.Namespaces)...)
	for _, p := range procs {
		errs = append(errs, p.Kill())
	}
	for _, p := range procs {
		errs = append(errs, waitGone(ctx, p))
	}
	for _, ns := range l.Namespaces {
		errs = append(errs, removeNamedNetns(ns))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("down %s: %w", lab, err)
	}
	return r.Store.Remove(lab)
}

// waitGone polls until p has exited (it holds namespaces, and so links, alive).
func waitGone(ctx context.Context, p state.Process) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(5 * time.Second)
	for !p.Exited() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline:
			return fmt.Errorf("%s (pid %d) did not exit", p.Role, p.Pid)
		case <-tick.C:
		}
	}
	return nil
}

// processesIn lists the processes whose network namespace is one of the named ones.
func processesIn(names []string) []state.Process {
	type id struct{ dev, ino uint64 }
	want := map[id]bool{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(node.NetnsDir, n), &st); err == nil {
			want[id{st.Dev, st.Ino}] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	ents, _ := os.ReadDir("/proc")
	var out []state.Process
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || !want[id{st.Dev, st.Ino}] {
			continue
		}
		start, err := state.ProcessStartTime(pid)
		if err != nil {
			continue
		}
		out = append(out, state.Process{Role: "process in lab namespace", Pid: pid, StartTime: start})
	}
	return out
}

func removeNamedNetns(name string) error {
	p := filepath.Join(node.NetnsDir, name)
	if err := unix.Unmount(p, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", p, err)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

// AbsPath is the absolute form of p as lab records keep paths ("" stays "").
func AbsPath(p string) string {
	if p == "" {
		return ""
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
