// Package graph draws a lab: its topology's nodes and links, each node's
// addresses, the director's virtual services with their scheduler and
// forwarding method, the VRRP addresses keepalived moves, and the real
// servers' VIP on loopback (DR, TUN). It writes Mermaid and Graphviz dot text,
// and SVG laid out here, in Go (no Graphviz needed): nodes in columns by
// their distance from the client, as the seed lab's figures put the client
// left, the director in the middle and the web servers right.
package graph

import (
	"fmt"
	"slices"
	"strings"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
)

// Role is what a node is in the lab.
type Role string

// The roles a node can have.
const (
	RoleClient     Role = "client"
	RoleDirector   Role = "director"
	RoleRealServer Role = "real server"
	RoleBridge     Role = "bridge"
	RoleHost       Role = "host" // neither: a router, say
)

// Node is one box of the picture.
type Node struct {
	Name  string
	Role  Role
	Lines []string // what the box says under the name
	Layer int      // the column: links away from the first client
}

// Edge is one link, with the interface at each end.
type Edge struct {
	A, B           string
	AIface, BIface string
}

// Graph is the picture of one lab.
type Graph struct {
	Name  string // the topology's lab name
	Nodes []Node // by layer, then in the topology's order
	Edges []Edge // in the topology's order
}

// Node returns the node called name.
func (g *Graph) Node(name string) (Node, bool) {
	i := slices.IndexFunc(g.Nodes, func(n Node) bool { return n.Name == name })
	if i < 0 {
		return Node{}, false
	}
	return g.Nodes[i], true
}

// Build makes the picture of a topology and, when spec is not nil, what a
// scenario gives its nodes.
func Build(t *topo.Topology, spec *lab.Spec) *Graph {
	g := &Graph{Name: t.Name}
	roles := roles(t, spec)
	for _, name := range order(t) {
		n := Node{Name: name, Role: roles[name]}
		if spec != nil {
			n.Lines = lines(spec, name)
		}
		g.Nodes = append(g.Nodes, n)
	}
	for _, l := range t.Links {
		g.Edges = append(g.Edges, Edge{A: l.A.Node, B: l.B.Node, AIface: l.A.Iface, BIface: l.B.Iface})
	}
	layer(g, roles)
	return g
}

// order is the topology's nodes in the order its links first name them (the
// file's order), then any node no link names, by name.
func order(t *topo.Topology) []string {
	var out []string
	for _, l := range t.Links {
		for _, e := range []topo.Endpoint{l.A, l.B} {
			if !slices.Contains(out, e.Node) {
				out = append(out, e.Node)
			}
		}
	}
	var rest []string
	for name := range t.Nodes {
		if !slices.Contains(out, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
}

// roles names each node's role: the nodes with IPVS services or VRRP are
// directors, the owners of their real servers' addresses real servers, and
// any other host a client when the scenario has directors.
func roles(t *topo.Topology, spec *lab.Spec) map[string]Role {
	r := map[string]Role{}
	for name, n := range t.Nodes {
		r[name] = RoleHost
		if n.Kind == topo.KindBridge {
			r[name] = RoleBridge
		}
	}
	if spec == nil {
		return r
	}
	directors := 0
	for _, n := range spec.Nodes {
		if len(n.Services) > 0 || (n.Keepalived != nil && len(n.Keepalived.VRRP) > 0) {
			r[n.Name] = RoleDirector
			directors++
		}
	}
	for _, n := range spec.Nodes {
		for _, svc := range n.Services {
			for _, s := range svc.Servers {
				if o := spec.OwnerOf(s.Addr.Addr()); o != "" && r[o] == RoleHost {
					r[o] = RoleRealServer
				}
			}
		}
	}
	if directors > 0 {
		for name, role := range r {
			if role == RoleHost {
				r[name] = RoleClient
			}
		}
	}
	return r
}

// layer puts each node in a column: its distance in links from the first
// client (or the first node when there is none); a node the walk does not
// reach goes in a column after the last.
func layer(g *Graph, roles map[string]Role) {
	if len(g.Nodes) == 0 {
		return
	}
	start := g.Nodes[0].Name
	for _, n := range g.Nodes {
		if roles[n.Name] == RoleClient {
			start = n.Name
			break
		}
	}
	dist := map[string]int{start: 0}
	queue := []string{start}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, e := range g.Edges {
			for _, p := range [][2]string{{e.A, e.B}, {e.B, e.A}} {
				if p[0] != cur {
					continue
				}
				if _, seen := dist[p[1]]; !seen {
					dist[p[1]] = dist[cur] + 1
					queue = append(queue, p[1])
				}
			}
		}
	}
	last := 0
	for _, d := range dist {
		last = max(last, d)
	}
	for i := range g.Nodes {
		d, ok := dist[g.Nodes[i].Name]
		if !ok {
			d = last + 1
		}
		g.Nodes[i].Layer = d
	}
	slices.SortStableFunc(g.Nodes, func(a, b Node) int { return a.Layer - b.Layer })
}

// lines says what a scenario gives a node: its addresses by interface (the
// VIP marked), the VRRP addresses it may take, and its virtual services.
func lines(spec *lab.Spec, name string) []string {
	n, ok := spec.Node(name)
	if !ok {
		return nil
	}
	vips := map[string]bool{}
	for _, d := range spec.Nodes {
		for _, svc := range d.Services {
			if svc.FWMark == 0 {
				vips[svc.Addr.Addr().String()] = true
			}
		}
	}
	var out []string
	for _, a := range n.Addresses {
		l := fmt.Sprintf("%s %s", a.Dev, a.Prefix)
		if vips[a.Prefix.Addr().String()] {
			l += " (VIP)"
		}
		out = append(out, l)
	}
	if n.Keepalived != nil {
		for _, v := range n.Keepalived.VRRP {
			var addrs []string
			for _, p := range v.VIPs {
				addrs = append(addrs, p.String())
			}
			out = append(out, fmt.Sprintf("%s %s VRRP %s %s prio %d", v.Interface, strings.Join(addrs, " "), v.Name, v.State, v.Priority))
		}
	}
	for _, svc := range n.Services {
		out = append(out, service(spec, svc))
	}
	return out
}

// service is one line for a virtual service: its address, scheduler,
// persistence, forwarding method and real servers.
func service(spec *lab.Spec, svc lab.Service) string {
	var b strings.Builder
	if svc.FWMark != 0 {
		fmt.Fprintf(&b, "fwmark %d", svc.FWMark)
	} else {
		fmt.Fprintf(&b, "%s %s", svc.Protocol, svc.Addr)
	}
	fmt.Fprintf(&b, " %s", svc.Scheduler)
	if svc.Persistent {
		fmt.Fprintf(&b, " -p %d", svc.Timeout)
	}
	var methods []string
	var servers []string
	for _, s := range svc.Servers {
		m := s.Method.Kind()
		if m == "" {
			m = string(s.Method)
		}
		if !slices.Contains(methods, m) {
			methods = append(methods, m)
		}
		name := spec.OwnerOf(s.Addr.Addr())
		if name == "" {
			name = s.Addr.String()
		}
		if s.Weight != 1 {
			name += fmt.Sprintf(" w%d", s.Weight)
		}
		servers = append(servers, name)
	}
	if len(methods) > 0 {
		fmt.Fprintf(&b, " %s", strings.Join(methods, "/"))
	}
	if len(servers) > 0 {
		fmt.Fprintf(&b, " → %s", strings.Join(servers, ", "))
	}
	return b.String()
}
