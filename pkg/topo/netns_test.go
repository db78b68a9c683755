package topo

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func privileged(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("creates namespaces: runs without -short, as root (make privileged runs it in the sandbox kernel)")
	}
	if os.Getuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
}

func handle(t *testing.T, ns string) *netlink.Handle {
	t.Helper()
	h, err := node.New(ns, ns).Netlink()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func TestDeployAndDestroy(t *testing.T) {
	privileged(t)
	top, err := Load("../../topologies/lvs-nat.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	top.Name = "topotest"
	rt := Netns{}
	ctx := context.Background()
	nodes, err := rt.NodeNamespaces(top)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Destroy(ctx, nodes) })
	if err := rt.Deploy(ctx, top); err != nil {
		t.Fatal(err)
	}
	// Each node has exactly the file's interfaces, up.
	for _, n := range []string{"client", "director", "web1", "web2"} {
		h := handle(t, NSName("topotest", n))
		for _, iface := range top.Interfaces(n) {
			l, err := h.LinkByName(iface)
			if err != nil {
				t.Fatalf("%s: %s: %v", n, iface, err)
			}
			if l.Attrs().Flags&unix.IFF_UP == 0 {
				t.Errorf("%s: %s is down", n, iface)
			}
		}
	}
	// The bridge lives in its own namespace with one port per peer.
	h := handle(t, NSName("topotest", "lan"))
	br, err := h.LinkByName("lan")
	if err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"director", "web1", "web2"} {
		l, err := h.LinkByName(port)
		if err != nil {
			t.Fatal(err)
		}
		if l.Attrs().MasterIndex != br.Attrs().Index {
			t.Errorf("port %s is not on bridge lan", port)
		}
	}
	// A veth's peer is in the other node's namespace.
	c, _ := handle(t, NSName("topotest", "client")).LinkByName("eth1")
	if c.Type() != "veth" {
		t.Errorf("client eth1 is a %s", c.Type())
	}
	if err := rt.Deploy(ctx, top); err == nil {
		t.Error("a second deploy of the same lab succeeded")
	}
	if _, err := rt.NodeNamespaces(top); err == nil {
		t.Error("NodeNamespaces of a deployed lab did not fail")
	}

	if err := rt.Destroy(ctx, nodes); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(node.NetnsDir, "clab-topotest-*")); len(m) != 0 {
		t.Fatalf("left behind: %v", m)
	}
	if err := rt.Destroy(ctx, nodes); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
}

// A failure after the namespaces and the first link exist must leave nothing of
// the lab, and must not touch a namespace that is not the lab's.
func TestDeployRollsBack(t *testing.T) {
	privileged(t)
	top, err := Load("../../topologies/lvs-nat.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	top.Name = "rollback"
	made := 0
	rt := Netns{beforeLink: func(i int) error {
		if i == 1 {
			m, _ := filepath.Glob(filepath.Join(node.NetnsDir, "clab-rollback-*"))
			made = len(m)
			return errors.New("injected fault")
		}
		return nil
	}}
	ctx := context.Background()
	nodes, err := rt.NodeNamespaces(top)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Destroy(ctx, nodes) })
	bystander := "clab-rollback-bystander" // same prefix, not the lab's
	if _, err := newNamedNetns(bystander, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = removeNamedNetns(bystander) })

	err = rt.Deploy(ctx, top)
	if err == nil || !strings.Contains(err.Error(), "injected fault") {
		t.Fatalf("deploy error %v, want the injected fault", err)
	}
	if made != 6 {
		t.Fatalf("fault injected with %d namespaces present, want 5 of the lab + the bystander", made)
	}
	m, _ := filepath.Glob(filepath.Join(node.NetnsDir, "clab-rollback-*"))
	if len(m) != 1 || filepath.Base(m[0]) != bystander {
		t.Errorf("after rollback: %v, want only %s", m, bystander)
	}
}
