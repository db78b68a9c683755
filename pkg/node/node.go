// Package node is the handle every other package uses to reach a lab node: a named
// network namespace, a way to run Go code inside it and a way to start a process in it.
package node

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bound, as iproute2 does.
const NetnsDir = "/run/netns"

// Node is one lab node: a name and the path of its network namespace.
type Node struct {
	Name   string // node name from the topology file, e.g. "director"
	NSPath string // e.g. /run/netns/clab-nat-director
}

// New returns the node whose namespace is bound at NetnsDir/nsName.
func New(name, nsName string) Node {
	return Node{Name: name, NSPath: filepath.Join(NetnsDir, nsName)}
}

// Do runs fn on an OS thread that has entered the node's network namespace.
// The thread is locked for the duration and restored afterwards; if it cannot be
// restored it is left locked so the Go runtime retires it. fn must not start
// goroutines that expect to run in the namespace.
func (n Node) Do(fn func() error) error {
	target, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		return fmt.Errorf("node %s: open namespace %s: %w", n.Name, n.NSPath, err)
	}
	defer target.Close()

	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("node %s: current namespace: %w", n.Name, err)
	}
	defer orig.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("node %s: enter namespace: %w", n.Name, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime destroys it when this goroutine exits.
		return errors.Join(fnErr, fmt.Errorf("node %s: restore namespace: %w", n.Name, err))
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Start starts cmd inside the node's network namespace: the fork happens on a thread
// that has entered it, so the child inherits it.
func (n Node) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Run starts cmd in the node's namespace and waits for it.
func (n Node) Run(cmd *exec.Cmd) error {
	if err := n.Start(cmd); err != nil {
		return err
	}
	return cmd.Wait()
}

// Netlink returns a rtnetlink handle bound to the node's namespace (only
// NETLINK_ROUTE: the sandbox kernel lacks other families). Close it after use.
func (n Node) Netlink() (*netlink.Handle, error) {
	fd, err := netns.GetFromPath(n.NSPath)
	if err != nil {
		return nil, fmt.Errorf("node %s: open namespace: %w", n.Name, err)
	}
	defer fd.Close()
	h, err := netlink.NewHandleAt(fd, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("node %s: netlink: %w", n.Name, err)
	}
	return h, nil
}

// Exists reports whether the node's namespace is bound.
func (n Node) Exists() bool {
	_, err := os.Stat(n.NSPath)
	return err == nil
}

// Addresses lists the node's addresses by interface, as "dev addr/len", in
// interface order, skipping loopback's 127.0.0.1 and IPv6 link-local addresses.
func (n Node) Addresses() ([]string, error) {
	h, links, err := n.links()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	var out []string
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("node %s: list addresses: %w", n.Name, err)
		}
		for _, a := range addrs {
			if a.IP.IsLoopback() || a.IP.IsLinkLocalUnicast() {
				continue
			}
			out = append(out, l.Attrs().Name+" "+a.IPNet.String())
		}
	}
	return out, nil
}

// MACs lists the hardware addresses of the node's Ethernet interfaces.
func (n Node) MACs() ([]string, error) {
	h, links, err := n.links()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []string
	for _, l := range links {
		if mac := l.Attrs().HardwareAddr; len(mac) == 6 && mac.String() != "00:00:00:00:00:00" {
			out = append(out, mac.String())
		}
	}
	return out, nil
}

// links opens a netlink handle in the node and lists its links; close the
// handle after use.
func (n Node) links() (*netlink.Handle, []netlink.Link, error) {
	h, err := n.Netlink()
	if err != nil {
		return nil, nil, err
	}
	links, err := h.LinkList()
	if err != nil {
		h.Close()
		return nil, nil, fmt.Errorf("node %s: list links: %w", n.Name, err)
	}
	return h, links, nil
}
