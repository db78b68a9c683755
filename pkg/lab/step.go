package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Step is one change to a running lab, then the checks that follow it: a
// scenario's steps run in order after its checks.
type Step struct {
	Name   string
	Action Action
	Checks []Check
}

// ActionKind names what a step does.
type ActionKind string

// The actions a step can take.
const (
	ActStop       ActionKind = "stop"        // SIGTERM a node's service, wait until it has ended
	ActKill       ActionKind = "kill"        // SIGKILL (kill -9) a node's service
	ActStart      ActionKind = "start"       // start a stopped service again
	ActRestart    ActionKind = "restart"     // stop, then start
	ActApply      ActionKind = "apply"       // ipvsadm rules run on the director's table
	ActLink       ActionKind = "link"        // an interface down or up
	ActNetem      ActionKind = "netem"       // delay, loss, rate on an interface (or none)
	ActHold       ActionKind = "hold"        // open connections and keep them open
	ActRelease    ActionKind = "release"     // close the held connections
	ActWait       ActionKind = "wait"        // a duration, or until a condition within a bound
	ActExec       ActionKind = "exec"        // a command in a node, its exit status checked
	ActFault      ActionKind = "fault"       // a node's web server answers 500, stalls, or answers again
	ActTraffic    ActionKind = "traffic"     // a client sends one request after another until traffic_end
	ActTrafficEnd ActionKind = "traffic_end" // the traffic stops; its failures and longest outage are judged
	ActAskHeld    ActionKind = "ask_held"    // a request on each held connection (do they survive?), then they close
)

// WebAnswer is how a faulted web server answers HTTP.
type WebAnswer string

// How the built-in web server answers.
const (
	AnswerOK    WebAnswer = "ok"    // 200 with the node's name
	AnswerError WebAnswer = "error" // 500 Internal Server Error
	AnswerStall WebAnswer = "stall" // reads the request and never answers
)

// ServiceWeb names a node's built-in web server among its services; a node's
// commands are named by their program (keepalived) or as cmd0, cmd1...
const ServiceWeb = "web"

// Action is what a step does; which fields count depends on Kind.
type Action struct {
	Kind    ActionKind
	Node    string
	Service string   // stop, kill, start, restart
	Rules   []string // apply: ipvsadm command lines, run in order
	Dev     string   // link, netem
	Up      bool     // link
	Netem   Netem    // netem
	HTTP    string   // hold: the URL
	Count   int      // hold: connections
	// Started (hold): each connection sends its request's first line and
	// waits, a request in progress: the connection has carried data (its
	// third packet through the director, when the sync daemon first sends
	// it); ask_held sends the rest.
	Started bool
	For     time.Duration
	Until   *Condition // wait: the condition, checked until Within
	Within  time.Duration
	Command []string      // exec
	Status  int           // exec: the exit status it must have
	Answer  WebAnswer     // fault
	Every   time.Duration // traffic: the time from one request's start to the next's (a request
	// still waiting delays the next); traffic_end: nothing
	MaxOutage time.Duration // traffic_end: the longest run of failed requests may last at most this (0: not judged)
	MaxFailed *int          // traffic_end: at most this many requests may fail (nil: not judged)
	Lost      *int          // ask_held: exactly this many held connections must go unanswered (nil: not judged)
}

// Netem is an impairment of an interface's outgoing packets (tc qdisc netem);
// the zero value removes it.
type Netem struct {
	Delay time.Duration
	Loss  float64 // percent
	Rate  uint64  // bytes per second; 0: unlimited
}

// IsZero reports whether n impairs nothing.
func (n Netem) IsZero() bool { return n == Netem{} }

func (n Netem) String() string {
	if n.IsZero() {
		return "none"
	}
	var parts []string
	if n.Delay != 0 {
		parts = append(parts, "delay "+n.Delay.String())
	}
	if n.Loss != 0 {
		parts = append(parts, fmt.Sprintf("loss %g%%", n.Loss))
	}
	if n.Rate != 0 {
		parts = append(parts, fmt.Sprintf("rate %d bytes/s", n.Rate))
	}
	return strings.Join(parts, ", ")
}

// Condition is what a wait step waits for.
type Condition struct {
	// Owner: a node that holds Address on one of its interfaces other than
	// lo (a VRRP master holds the VIP; others may hold it too, as a master
	// killed with -9 does); "" means no node of the lab holds it.
	Address netip.Addr
	Owner   *string
	Only    bool // Owner is the only node that holds Address
	// Server: real server Server is (Present) or is not in the director's
	// service Service (a health checker adds and removes it).
	Service string
	Server  netip.AddrPort
	Present bool
	Weight  *int // with Present: the weight it must have (0: inhibited)
	// Answers: a request to URL from From gets an answer.
	URL  string
	From string
	// VRRP: node VRRPNode's keepalived has instance Instance in State.
	VRRPNode string
	Instance string
	State    VRRPState
	// Synced: every held connection is in node Synced's IPVS connection
	// table (a backup director's sync daemon received it).
	Synced string
	// Neighbour: From's neighbour entry for Address has the MAC of node
	// NeighbourOf (the client has taken a gratuitous ARP).
	NeighbourOf string
}

// Describe says what a condition waits for.
func (c Condition) Describe() string {
	switch {
	case c.Owner != nil && *c.Owner == "":
		return fmt.Sprintf("no node holds %s", c.Address)
	case c.VRRPNode != "":
		return fmt.Sprintf("%s's %s is %s", c.VRRPNode, c.Instance, c.State)
	case c.Synced != "":
		return fmt.Sprintf("every held connection is in %s's connection table", c.Synced)
	case c.NeighbourOf != "":
		return fmt.Sprintf("%s's neighbour entry for %s is %s's", c.From, c.Address, c.NeighbourOf)
	case c.Owner != nil && c.Only:
		return fmt.Sprintf("only %s holds %s", *c.Owner, c.Address)
	case c.Owner != nil:
		return fmt.Sprintf("%s holds %s", *c.Owner, c.Address)
	case c.Server.IsValid() && c.Present && c.Weight != nil:
		return fmt.Sprintf("real server %s is in %s with weight %d", c.Server, c.Service, *c.Weight)
	case c.Server.IsValid() && c.Present:
		return fmt.Sprintf("real server %s is in %s", c.Server, c.Service)
	case c.Server.IsValid():
		return fmt.Sprintf("real server %s is not in %s", c.Server, c.Service)
	}
	return fmt.Sprintf("%s answers from %s", c.URL, c.From)
}

// Describe says what the action does, for reports.
func (a Action) Describe() string {
	switch a.Kind {
	case ActStop, ActKill, ActStart, ActRestart:
		return fmt.Sprintf("%s %s's %s", a.Kind, a.Node, a.Service)
	case ActApply:
		return fmt.Sprintf("apply on %s: %s", a.Node, strings.Join(a.Rules, "; "))
	case ActLink:
		state := "down"
		if a.Up {
			state = "up"
		}
		return fmt.Sprintf("link %s %s %s", a.Node, a.Dev, state)
	case ActNetem:
		return fmt.Sprintf("netem on %s %s: %s", a.Node, a.Dev, a.Netem)
	case ActHold:
		if a.Started {
			return fmt.Sprintf("hold %d connections to %s from %s, each with its request begun", a.Count, a.HTTP, a.Node)
		}
		return fmt.Sprintf("hold %d connections to %s from %s", a.Count, a.HTTP, a.Node)
	case ActRelease:
		return "release the held connections"
	case ActWait:
		if a.Until != nil {
			return fmt.Sprintf("wait until %s (at most %v)", a.Until.Describe(), a.Within)
		}
		return fmt.Sprintf("wait %v", a.For)
	case ActExec:
		return fmt.Sprintf("exec on %s: %s (status %d)", a.Node, strings.Join(a.Command, " "), a.Status)
	case ActFault:
		return fmt.Sprintf("%s's web server answers: %s", a.Node, a.Answer)
	case ActTraffic:
		return fmt.Sprintf("traffic from %s to %s, a request every %v", a.Node, a.HTTP, a.Every)
	case ActTrafficEnd:
		return "the traffic stops"
	case ActAskHeld:
		return "a request on each held connection"
	}
	return string(a.Kind)
}

// CloneServices returns a copy of services that shares no slice with them.
func CloneServices(in []Service) []Service {
	out := make([]Service, len(in))
	for i, s := range in {
		s.SchedFlags = append([]SchedFlag(nil), s.SchedFlags...)
		s.Servers = append([]Server(nil), s.Servers...)
		out[i] = s
	}
	return out
}

// Clone returns a copy of s whose nodes and services can change without
// changing s (steps change a lab's services).
func (s *Spec) Clone() Spec {
	out := Spec{Nodes: make([]NodeSpec, len(s.Nodes))}
	for i, n := range s.Nodes {
		n.Services = CloneServices(n.Services)
		out.Nodes[i] = n
	}
	return out
}

// SetServices replaces a node's IPVS services.
func (s *Spec) SetServices(node string, svcs []Service) {
	for i := range s.Nodes {
		if s.Nodes[i].Name == node {
			s.Nodes[i].Services = svcs
			return
		}
	}
	s.Nodes = append(s.Nodes, NodeSpec{Name: node, Services: svcs})
}
