package apply

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/moby/ipvs"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Resource is a kind of kernel object apply manages.
type Resource string

// Resources, in the order Execute changes them.
const (
	Sysctls   Resource = "sysctl"
	Links     Resource = "link"
	Addresses Resource = "address"
	Routes    Resource = "route"
	Timeouts  Resource = "IPVS timeouts"
	Services  Resource = "service"
	Servers   Resource = "real server"
	Marks     Resource = "firewall marks"
	Processes Resource = "processes" // web servers and commands (the runner starts them)
)

// Action is what a change does to its object.
type Action string

// Actions.
const (
	Add     Action = "add"
	Edit    Action = "edit"
	Delete  Action = "delete"
	Set     Action = "set"
	Restart Action = "restart"
)

// Change is one write that brings a node's kernel state toward a spec: which
// node, which kind of object, which object, and what to do to it. Diff plans
// changes; Execute makes them.
type Change struct {
	Node     string
	Resource Resource
	Object   string // e.g. "net.ipv4.ip_forward", "203.0.113.1/24 dev eth1", "tcp:203.0.113.1:80"
	Action   Action
	Detail   string // what it becomes, or what it is now, for people

	exec func(*session) error
	run  func(context.Context, *session) error // instead of exec, for writes that take a context
}

func (c Change) String() string {
	s := fmt.Sprintf("%s: %s %s %s", c.Node, c.Action, c.Resource, c.Object)
	if c.Detail != "" {
		s += " (" + c.Detail + ")"
	}
	return s
}

// session holds one node's handles, opened when first needed.
type session struct {
	node  node.Node
	nl    *netlink.Handle
	ipvs  IPVS
	marks markBackend
	done  []func()
}

func (s *session) netlink() (*netlink.Handle, error) {
	if s.nl == nil {
		h, err := s.node.Netlink()
		if err != nil {
			return nil, err
		}
		s.nl = h
		s.done = append(s.done, h.Close)
	}
	return s.nl, nil
}

// link returns the netlink handle and the link named dev.
func (s *session) link(dev string) (*netlink.Handle, netlink.Link, error) {
	h, err := s.netlink()
	if err != nil {
		return nil, nil, err
	}
	l, err := h.LinkByName(dev)
	return h, l, err
}

func (s *session) ipvsHandle() (IPVS, error) {
	if s.ipvs == nil {
		h, err := ipvs.New(s.node.NSPath)
		if err != nil {
			return nil, fmt.Errorf("%s: IPVS netlink (is the ip_vs module loaded?): %w", s.node.Name, err)
		}
		s.ipvs = h
		s.done = append(s.done, h.Close)
	}
	return s.ipvs, nil
}

func (s *session) close() {
	for _, f := range s.done {
		f()
	}
}

// Handles holds each node's netlink and IPVS handles, opened when first
// needed, so that a Diff, its Execute and the read-back Diff of one lab share
// them. Close it after use.
type Handles struct {
	nodes    map[string]node.Node
	sessions map[string]*session
}

// Open returns handles for the nodes of a lab.
func Open(nodes map[string]node.Node) *Handles {
	return &Handles{nodes: nodes, sessions: map[string]*session{}}
}

// Close closes every handle opened.
func (h *Handles) Close() {
	for _, s := range h.sessions {
		s.close()
	}
	h.sessions = map[string]*session{}
}

func (h *Handles) session(name string) (*session, error) {
	if s, ok := h.sessions[name]; ok {
		return s, nil
	}
	n, ok := h.nodes[name]
	if !ok {
		return nil, fmt.Errorf("apply: node %q is not in the lab", name)
	}
	s := &session{node: n}
	h.sessions[name] = s
	return s, nil
}

// Diff reads every node's state from the kernel and returns the changes that
// bring it to desired: what is missing or differs, and what previous (the spec
// applied before, or nil) declared and desired no longer does. It writes
// nothing. Read-back after Execute is Diff returning none.
func (h *Handles) Diff(ctx context.Context, desired lab.Spec, previous *lab.Spec) ([]Change, error) {
	var all []Change
	plan := func(want, old lab.NodeSpec) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := h.session(want.Name)
		if err != nil {
			return err
		}
		ch, err := diffNode(ctx, s, want, old)
		all = append(all, ch...)
		return err
	}
	for _, want := range desired.Nodes {
		var old lab.NodeSpec
		if previous != nil {
			old, _ = previous.Node(want.Name)
		}
		if err := plan(want, old); err != nil {
			return nil, err
		}
	}
	if previous != nil { // nodes the previous spec configured and desired leaves alone
		for _, old := range previous.Nodes {
			if _, still := desired.Node(old.Name); still {
				continue
			}
			if _, ok := h.nodes[old.Name]; !ok {
				continue
			}
			if err := plan(lab.NodeSpec{Name: old.Name}, old); err != nil {
				return nil, err
			}
		}
	}
	return all, nil
}

// Execute makes the changes in order, and stops at the first that fails.
func (h *Handles) Execute(ctx context.Context, changes []Change) error {
	for _, c := range changes {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := h.session(c.Node)
		if err != nil {
			return err
		}
		if c.run != nil {
			err = c.run(ctx, s)
		} else {
			err = c.exec(s)
		}
		if err != nil {
			return fmt.Errorf("%s %s %s %s: %w", c.Node, c.Action, c.Resource, c.Object, err)
		}
	}
	return nil
}

// Apply brings every node to desired (removing what previous declared and
// desired does not) and returns the changes it made; applying the same spec
// twice makes none.
func (h *Handles) Apply(ctx context.Context, desired lab.Spec, previous *lab.Spec) ([]Change, error) {
	changes, err := h.Diff(ctx, desired, previous)
	if err != nil {
		return nil, err
	}
	return changes, h.Execute(ctx, changes)
}

// Diff is Handles.Diff on handles of its own.
func Diff(ctx context.Context, nodes map[string]node.Node, desired lab.Spec, previous *lab.Spec) ([]Change, error) {
	h := Open(nodes)
	defer h.Close()
	return h.Diff(ctx, desired, previous)
}

// diffNode plans one node's changes, resource by resource.
func diffNode(ctx context.Context, s *session, want, old lab.NodeSpec) ([]Change, error) {
	var all []Change
	marks := func(s *session, want, old lab.NodeSpec) ([]Change, error) { return diffMarks(ctx, s, want, old) }
	for _, diff := range []func(*session, lab.NodeSpec, lab.NodeSpec) ([]Change, error){
		diffSysctls, diffAddresses, diffRoutes, diffTimeouts, diffServices, marks,
	} {
		ch, err := diff(s, want, old)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.node.Name, err)
		}
		all = append(all, ch...)
	}
	return all, nil
}

// diffSysctls: ip_forward and the ARP knobs are set first, before addresses
// appear. Keys naming an interface exist once the interface does, which the
// topology made. (Sysctls a previous spec set keep their values: the kernel's
// defaults are not known.)
func diffSysctls(s *session, want, _ lab.NodeSpec) ([]Change, error) {
	var out []Change
	err := s.node.Do(func() error {
		for _, sc := range want.Sysctls {
			cur, err := os.ReadFile(sc.Path())
			if err != nil {
				return fmt.Errorf("sysctl %s: %w", sc.Key, err)
			}
			if now := strings.TrimSpace(string(cur)); now != sc.Value {
				out = append(out, Change{Node: want.Name, Resource: Sysctls, Object: sc.Key, Action: Set,
					Detail: fmt.Sprintf("%s, is %s", sc.Value, now), exec: setSysctl(sc)})
			}
		}
		return nil
	})
	return out, err
}

func setSysctl(sc lab.Sysctl) func(*session) error {
	return func(s *session) error {
		return s.node.Do(func() error { return os.WriteFile(sc.Path(), []byte(sc.Value), 0o644) })
	}
}

func diffAddresses(s *session, want, old lab.NodeSpec) ([]Change, error) {
	h, err := s.netlink()
	if err != nil {
		return nil, err
	}
	var out []Change
	up := map[string]bool{}
	for _, a := range want.Addresses {
		link, err := h.LinkByName(a.Dev)
		if err != nil {
			return nil, fmt.Errorf("address %s: interface %s: %w", a.Prefix, a.Dev, err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 && !up[a.Dev] { // e.g. tunl0, which the kernel makes down
			up[a.Dev] = true
			dev := a.Dev
			out = append(out, Change{Node: want.Name, Resource: Links, Object: dev, Action: Set, Detail: "up",
				exec: func(s *session) error {
					h, l, err := s.link(dev)
					if err != nil {
						return err
					}
					return h.LinkSetUp(l)
				}})
		}
		has, err := hasAddr(h, link, a)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.Dev, err)
		}
		if !has {
			out = append(out, Change{Node: want.Name, Resource: Addresses, Object: a.String(), Action: Add, exec: addAddr(a)})
		}
	}
	for _, a := range old.Addresses {
		if slices.Contains(want.Addresses, a) {
			continue
		}
		link, err := h.LinkByName(a.Dev)
		if err != nil {
			continue // the interface went with the topology: so did the address
		}
		if has, err := hasAddr(h, link, a); err != nil || !has {
			continue
		}
		out = append(out, Change{Node: want.Name, Resource: Addresses, Object: a.String(), Action: Delete, exec: delAddr(a)})
	}
	return out, nil
}

func addAddr(a lab.Address) func(*session) error {
	return func(s *session) error {
		h, link, err := s.link(a.Dev)
		if err != nil {
			return err
		}
		addr := &netlink.Addr{IPNet: ipNet(a.Prefix)}
		if a.Prefix.Addr().Is6() {
			addr.Flags = unix.IFA_F_NODAD // usable at once, no duplicate detection delay
		}
		return h.AddrAdd(link, addr)
	}
}

func delAddr(a lab.Address) func(*session) error {
	return func(s *session) error {
		h, link, err := s.link(a.Dev)
		if err != nil {
			return err
		}
		if err := h.AddrDel(link, &netlink.Addr{IPNet: ipNet(a.Prefix)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return err
		}
		return nil
	}
}

func kernelRoute(h *netlink.Handle, r lab.Route) (*netlink.Route, error) {
	nr := &netlink.Route{Dst: ipNet(r.Dst)}
	if r.Via.IsValid() {
		nr.Gw = r.Via.AsSlice()
	}
	if r.Dev != "" {
		link, err := h.LinkByName(r.Dev)
		if err != nil {
			return nil, fmt.Errorf("route %s: interface %s: %w", r, r.Dev, err)
		}
		nr.LinkIndex = link.Attrs().Index
	}
	return nr, nil
}

func diffRoutes(s *session, want, old lab.NodeSpec) ([]Change, error) {
	h, err := s.netlink()
	if err != nil {
		return nil, err
	}
	var out []Change
	for _, r := range old.Routes {
		if slices.Contains(want.Routes, r) {
			continue
		}
		nr, err := kernelRoute(h, r)
		if err != nil {
			continue // its interface is gone, and the route with it
		}
		if has, err := hasRoute(h, nr); err != nil || !has {
			continue
		}
		out = append(out, Change{Node: want.Name, Resource: Routes, Object: r.String(), Action: Delete,
			exec: func(s *session) error {
				h, err := s.netlink()
				if err != nil {
					return err
				}
				if err := h.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) {
					return err
				}
				return nil
			}})
	}
	for _, r := range want.Routes {
		nr, err := kernelRoute(h, r)
		if err != nil {
			return nil, err
		}
		has, err := hasRoute(h, nr)
		if err != nil {
			return nil, fmt.Errorf("list routes: %w", err)
		}
		if has {
			continue
		}
		out = append(out, Change{Node: want.Name, Resource: Routes, Object: r.String(), Action: Add,
			exec: func(s *session) error {
				h, err := s.netlink()
				if err != nil {
					return err
				}
				return h.RouteReplace(nr)
			}})
	}
	return out, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func diffTimeouts(s *session, want, _ lab.NodeSpec) ([]Change, error) {
	if want.Timeouts == nil {
		return nil, nil
	}
	hi, err := s.ipvsHandle()
	if err != nil {
		return nil, err
	}
	h, ok := hi.(*ipvs.Handle)
	if !ok {
		return nil, nil
	}
	cur, err := h.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("IPVS timeouts: %w", err)
	}
	next := *cur
	set := func(d *time.Duration, sec int) {
		if sec > 0 {
			*d = time.Duration(sec) * time.Second
		}
	}
	set(&next.TimeoutTCP, want.Timeouts.TCP)
	set(&next.TimeoutTCPFin, want.Timeouts.TCPFin)
	set(&next.TimeoutUDP, want.Timeouts.UDP)
	if next == *cur {
		return nil, nil
	}
	return []Change{{Node: want.Name, Resource: Timeouts, Object: "tcp tcpfin udp", Action: Set,
		Detail: fmt.Sprintf("%v %v %v", next.TimeoutTCP, next.TimeoutTCPFin, next.TimeoutUDP),
		exec: func(s *session) error {
			hi, err := s.ipvsHandle()
			if err != nil {
				return err
			}
			return hi.(*ipvs.Handle).SetConfig(&next)
		}}}, nil
}

func diffServices(s *session, want, old lab.NodeSpec) ([]Change, error) {
	if len(want.Services) == 0 && len(old.Services) == 0 {
		return nil, nil // not a director, now or before: IPVS is not ours to read
	}
	if want.Keepalived.ManagesIPVS() {
		return nil, nil // keepalived's checkers hold this table
	}
	h, err := s.ipvsHandle()
	if err != nil {
		return nil, err
	}
	return DiffIPVS(want.Name, h, want.Services)
}

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
