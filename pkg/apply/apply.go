package apply

import (
	"context"
	"errors"
	"fmt"
	"github.com/lvslab/lvslab/pkg/lab"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Apply brings every node of spec to its desired state. nodes maps node names to
// their handles. It returns the writes it made; a second Apply of the same spec
// returns none.
func Apply(ctx context.Context, nodes map[string]node.Node, spec lab.Spec) ([]Change, error) {
	return run(ctx, nodes, spec, false)
}

// Check reads every node's state back from the kernel and returns what differs
// from spec (the writes Apply would make), without changing anything.
func Check(ctx context.Context, nodes map[string]node.Node, spec lab.Spec) ([]Change, error) {
	return run(ctx, nodes, spec, true)
}

func run(ctx context.Context, nodes map[string]node.Node, spec lab.Spec, dry bool) ([]Change, error) {
	var all []Change
	for _, ns := range spec.Nodes {
		if err := ctx.Err(); err != nil {
			return all, err
		}
		n, ok := nodes[ns.Name]
		if !ok {
			return all, fmt.Errorf("apply: node %q is not in the lab", ns.Name)
		}
		ch, err := applyNode(n, ns, dry)
		all = append(all, ch...)
		if err != nil {
			return all, err
		}
	}
	return all, nil
}

func applyNode(n node.Node, want lab.NodeSpec, dry bool) ([]Change, error) {
	var changes []Change
	note := func(f string, a ...any) { changes = append(changes, Change{n.Name, fmt.Sprintf(f, a...)}) }

	// Sysctls first: ip_forward and the ARP knobs must hold before addresses appear.
	// Keys naming an interface exist once the interface does, which the topology made.
	err := n.Do(func() error {
		for _, s := range want.Sysctls {
			cur, err := os.ReadFile(s.Path())
			if err != nil {
				return fmt.Errorf("sysctl %s: %w", s.Key, err)
			}
			if strings.TrimSpace(string(cur)) == s.Value {
				continue
			}
			if dry {
				note("sysctl %s is %s, want %s", s.Key, strings.TrimSpace(string(cur)), s.Value)
				continue
			}
			if err := os.WriteFile(s.Path(), []byte(s.Value), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", s.Key, s.Value, err)
			}
			note("sysctl %s=%s", s.Key, s.Value)
		}
		return nil
	})
	if err != nil {
		return changes, fmt.Errorf("%s: %w", n.Name, err)
	}

	h, err := n.Netlink()
	if err != nil {
		return changes, err
	}
	defer h.Close()

	for _, a := range want.Addresses {
		link, err := h.LinkByName(a.Dev)
		if err != nil {
			return changes, fmt.Errorf("%s: address %s: interface %s: %w", n.Name, a.Prefix, a.Dev, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 { // e.g. tunl0, which the kernel makes down
			if dry {
				note("link %s is down", a.Dev)
			} else if err := h.LinkSetUp(link); err != nil {
				return changes, fmt.Errorf("%s: set %s up: %w", n.Name, a.Dev, err)
			} else {
				note("link %s up", a.Dev)
			}
		}
		if has, err := hasAddr(h, link, a); err != nil {
			return changes, fmt.Errorf("%s: list addresses of %s: %w", n.Name, a.Dev, err)
		} else if has {
			continue
		}
		if dry {
			note("address %s dev %s is missing", a.Prefix, a.Dev)
			continue
		}
		addr := &netlink.Addr{IPNet: ipNet(a.Prefix)}
		if a.Prefix.Addr().Is6() {
			addr.Flags = 0x80 // IFA_F_NODAD: usable at once, no duplicate detection delay
		}
		if err := h.AddrAdd(link, addr); err != nil {
			return changes, fmt.Errorf("%s: add address %s to %s: %w", n.Name, a.Prefix, a.Dev, err)
		}
		note("address %s dev %s", a.Prefix, a.Dev)
	}

	for _, r := range want.Routes {
		nr := &netlink.Route{Dst: ipNet(r.Dst)}
		if r.Via.IsValid() {
			nr.Gw = r.Via.AsSlice()
		}
		if r.Dev != "" {
			link, err := h.LinkByName(r.Dev)
			if err != nil {
				return changes, fmt.Errorf("%s: route %s: interface %s: %w", n.Name, r, r.Dev, err)
			}
			nr.LinkIndex = link.Attrs().Index
		}
		if has, err := hasRoute(h, nr); err != nil {
			return changes, fmt.Errorf("%s: list routes: %w", n.Name, err)
		} else if has {
			continue
		}
		if dry {
			note("route %s is missing", r)
			continue
		}
		if err := h.RouteReplace(nr); err != nil {
			return changes, fmt.Errorf("%s: route %s: %w", n.Name, r, err)
		}
		note("route %s", r)
	}

	if len(want.Services) > 0 || want.Timeouts != nil {
		ih, err := ipvs.New(n.NSPath)
		if err != nil {
			return changes, fmt.Errorf("%s: IPVS netlink (is the ip_vs module loaded?): %w", n.Name, err)
		}
		defer ih.Close()
		if want.Timeouts != nil {
			ch, err := reconcileTimeouts(n.Name, ih, *want.Timeouts, dry)
			changes = append(changes, ch...)
			if err != nil {
				return changes, err
			}
		}
		var h IPVS = ih
		if dry {
			h = readOnly{ih}
		}
		ch, err := ReconcileIPVS(n.Name, h, want.Services)
		changes = append(changes, ch...)
		if err != nil {
			return changes, err
		}
	}
	if len(want.Marks) > 0 {
		ch, err := reconcileMarks(n, want.Marks, dry)
		changes = append(changes, ch...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// Remove undoes what old declared and next no longer does: addresses, routes,
// firewall marks, and IPVS services of a node that has none left. (Sysctls keep
// their values: the kernel's defaults are not known.)
func Remove(ctx context.Context, nodes map[string]node.Node, old, next lab.Spec) ([]Change, error) {
	var changes []Change
	for _, o := range old.Nodes {
		if err := ctx.Err(); err != nil {
			return changes, err
		}
		n, ok := nodes[o.Name]
		if !ok {
			continue
		}
		var nx lab.NodeSpec
		for _, x := range next.Nodes {
			if x.Name == o.Name {
				nx = x
			}
		}
		ch, err := removeNode(n, o, nx)
		changes = append(changes, ch...)
		if err != nil {
			return changes, err
		}
	}
	return changes, nil
}

func removeNode(n node.Node, old, next lab.NodeSpec) ([]Change, error) {
	var changes []Change
	note := func(f string, a ...any) { changes = append(changes, Change{n.Name, fmt.Sprintf(f, a...)}) }
	h, err := n.Netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	for _, r := range old.Routes {
		if slices.Contains(next.Routes, r) {
			continue
		}
		nr := &netlink.Route{Dst: ipNet(r.Dst)}
		if r.Via.IsValid() {
			nr.Gw = r.Via.AsSlice()
		}
		if err := h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
			return changes, fmt.Errorf("%s: delete route %s: %w", n.Name, r, err)
		}
		note("delete route %s", r)
	}
	for _, a := range old.Addresses {
		if slices.Contains(next.Addresses, a) {
			continue
		}
		link, err := h.LinkByName(a.Dev)
		if err != nil {
			continue
		}
		if err := h.AddrDel(link, &netlink.Addr{IPNet: ipNet(a.Prefix)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return changes, fmt.Errorf("%s: delete address %s from %s: %w", n.Name, a.Prefix, a.Dev, err)
		}
		note("delete address %s dev %s", a.Prefix, a.Dev)
	}
	if len(old.Services) > 0 && len(next.Services) == 0 {
		ih, err := ipvs.New(n.NSPath)
		if err != nil {
			return changes, fmt.Errorf("%s: IPVS netlink: %w", n.Name, err)
		}
		defer ih.Close()
		ch, err := ReconcileIPVS(n.Name, ih, nil)
		changes = append(changes, ch...)
		if err != nil {
			return changes, err
		}
	}
	if len(old.Marks) > 0 && len(next.Marks) == 0 {
		if err := removeMarks(n); err != nil {
			return changes, err
		}
		note("delete firewall marks")
	}
	return changes, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func reconcileTimeouts(nodeName string, h *ipvs.Handle, want lab.Timeouts, dry bool) ([]Change, error) {
	cur, err := h.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: IPVS timeouts: %w", nodeName, err)
	}
	next := *cur
	set := func(d *time.Duration, s int) {
		if s > 0 {
			*d = time.Duration(s) * time.Second
		}
	}
	set(&next.TimeoutTCP, want.TCP)
	set(&next.TimeoutTCPFin, want.TCPFin)
	set(&next.TimeoutUDP, want.UDP)
	if next == *cur {
		return nil, nil
	}
	c := Change{nodeName, fmt.Sprintf("IPVS timeouts tcp %v tcpfin %v udp %v", next.TimeoutTCP, next.TimeoutTCPFin, next.TimeoutUDP)}
	if dry {
		return []Change{c}, nil
	}
	if err := h.SetConfig(&next); err != nil {
		return nil, fmt.Errorf("%s: set IPVS timeouts: %w", nodeName, err)
	}
	return []Change{c}, nil
}

// readOnly lets ReconcileIPVS compute a diff: it reads, and writes nothing.
type readOnly struct{ IPVS }

func (readOnly) NewService(*ipvs.Service) error                           { return nil }
func (readOnly) UpdateService(*ipvs.Service) error                        { return nil }
func (readOnly) DelService(*ipvs.Service) error                           { return nil }
func (readOnly) NewDestination(*ipvs.Service, *ipvs.Destination) error    { return nil }
func (readOnly) UpdateDestination(*ipvs.Service, *ipvs.Destination) error { return nil }
func (readOnly) DelDestination(*ipvs.Service, *ipvs.Destination) error    { return nil }

func hasAddr(h *netlink.Handle, link netlink.Link, a lab.Address) (bool, error) {
	addrs, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return false, err
	}
	for _, x := range addrs {
		ones, _ := x.Mask.Size()
		if x.IP.Equal(a.Prefix.Addr().AsSlice()) && ones == a.Prefix.Bits() {
			return true, nil
		}
	}
	return false, nil
}

func hasRoute(h *netlink.Handle, want *netlink.Route) (bool, error) {
	fam := netlink.FAMILY_V4
	if want.Dst.IP.To4() == nil {
		fam = netlink.FAMILY_V6
	}
	routes, err := h.RouteList(nil, fam)
	if err != nil {
		return false, err
	}
	for _, r := range routes {
		dst := r.Dst
		if dst == nil { // the default route lists without a Dst
			dst = &net.IPNet{IP: make(net.IP, len(want.Dst.IP)), Mask: net.CIDRMask(0, 8*len(want.Dst.IP))}
		}
		if dst.String() != want.Dst.String() || !r.Gw.Equal(want.Gw) {
			continue
		}
		if want.LinkIndex != 0 && r.LinkIndex != want.LinkIndex {
			continue
		}
		return true, nil
	}
	return false, nil
}
