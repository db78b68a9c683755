package topo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NSName is the namespace name of a node, as containerlab names its containers.
func NSName(lab, nodeName string) string { return "clab-" + lab + "-" + nodeName }

// Runtime makes a topology's nodes and links, and removes them again. The runner
// records what NodeNamespaces returns before it calls Deploy, so that Destroy
// can find everything after a crash; a runtime never writes lab records itself.
type Runtime interface {
	// Name is how lab records name this runtime.
	Name() lab.Runtime
	// NodeNamespaces returns the nodes Deploy will make for t, each with its
	// network namespace, bridges first. It fails, before anything exists, if one
	// of them exists already.
	NodeNamespaces(t *Topology) ([]state.Node, error)
	// Deploy makes every node and link of t. If a step fails (or ctx ends) it
	// removes what it made and returns the error.
	Deploy(ctx context.Context, t *Topology) error
	// Destroy removes the nodes (from a record of NodeNamespaces' answer) and
	// everything inside them. It keeps going past failures and reports them all;
	// nodes already gone are not an error, so it is safe to repeat. The nodes'
	// processes must have been stopped first.
	Destroy(ctx context.Context, nodes []state.Node) error
}

// Netns is the embedded runtime: one named network namespace per node, veth pairs
// with the file's interface names, and each bridge inside a namespace of its own.
// Nothing is created in the namespace of the process that calls it.
type Netns struct {
	// IPv6 turns off duplicate address detection in each new namespace, so that
	// IPv6 addresses (link-local ones too) are usable at once; a lab without IPv6
	// does not pay for it.
	IPv6 bool

	beforeLink func(i int) error // test hook: a fault injected before link i is made
}

// Name implements Runtime.
func (Netns) Name() lab.Runtime { return lab.RuntimeNetns }

// NodeNamespaces implements Runtime: namespace clab-<lab>-<node> for each node.
func (Netns) NodeNamespaces(t *Topology) ([]state.Node, error) {
	var nodes []state.Node
	for _, n := range t.NodeNames() {
		ns := NSName(t.Name, n)
		if _, err := os.Stat(filepath.Join(node.NetnsDir, ns)); err == nil {
			return nil, fmt.Errorf("lab %q: namespace %s already exists and is not lvslab's record of this lab; remove it or rename the lab", t.Name, ns)
		}
		nodes = append(nodes, state.Node{Name: n, Kind: t.Nodes[n].Kind, Namespace: ns})
	}
	return nodes, nil
}

// Deploy implements Runtime.
func (r Netns) Deploy(ctx context.Context, t *Topology) error {
	nodes, err := r.NodeNamespaces(t)
	if err != nil {
		return err
	}
	if err := r.build(ctx, t); err != nil {
		return errors.Join(fmt.Errorf("deploy %s: %w", t.Name, err), r.Destroy(context.WithoutCancel(ctx), nodes))
	}
	return nil
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
		var h *netlink.Handle
		fd, err := newNamedNetns(ns, func() error {
			// Inside the new namespace already: its netlink socket and its own
			// settings need no further namespace switches.
			if r.IPv6 {
				if err := quietIPv6(); err != nil {
					return err
				}
			}
			var err error
			if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
				return fmt.Errorf("netlink: %w", err)
			}
			// lo is interface 1 of every new namespace.
			if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: 1, Name: "lo"}}); err != nil {
				return fmt.Errorf("lo up: %w", err)
			}
			return nil
		})
		if h != nil {
			handles[name] = h
		}
		if err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
		fds[name] = fd
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
		ends := []Endpoint{l.A, l.B}
		if t.Nodes[l.A.Node].Kind != KindBridge {
			v.Flags = net.FlagUp // made up: only the peer needs its own calls
			ends = ends[1:]
		}
		if err := handles[l.A.Node].LinkAdd(v); err != nil {
			return fmt.Errorf("link %s-%s: %w", l.A, l.B, err)
		}
		for _, e := range ends {
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
// It runs inside the new namespace (the calling thread has entered it).
func quietIPv6() error {
	for _, k := range []string{"all", "default"} {
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/accept_dad", []byte("0"), 0o644)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("ipv6 accept_dad: %w", err)
		}
	}
	return nil
}

// newNamedNetns creates a network namespace bound at NetnsDir/name, runs inside
// (if not nil) in it, and returns a handle to it. The calling thread's namespace
// is restored before returning.
func newNamedNetns(name string, inside func() error) (netns.NsHandle, error) {
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
	if err == nil && inside != nil {
		if ierr := inside(); ierr != nil {
			h.Close()
			err = ierr
		}
	}
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

// Destroy implements Runtime: it removes the nodes' namespaces, and with them
// every link inside.
func (Netns) Destroy(ctx context.Context, nodes []state.Node) error {
	var errs []error
	for _, n := range nodes {
		errs = append(errs, removeNamedNetns(n.Namespace))
	}
	return errors.Join(errs...)
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
