package scenario

import (
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/lab"
)

type rawStep struct {
	Name       string         `yaml:"name,omitempty"`
	Stop       *rawServiceRef `yaml:"stop,omitempty"`
	Kill       *rawServiceRef `yaml:"kill,omitempty"`
	Start      *rawServiceRef `yaml:"start,omitempty"`
	Restart    *rawServiceRef `yaml:"restart,omitempty"`
	Apply      *rawApply      `yaml:"apply,omitempty"`
	Link       *rawLink       `yaml:"link,omitempty"`
	Netem      *rawNetem      `yaml:"netem,omitempty"`
	Hold       *rawHoldAct    `yaml:"hold,omitempty"`
	Release    bool           `yaml:"release,omitempty"`
	Wait       *rawWait       `yaml:"wait,omitempty"`
	Exec       *rawExec       `yaml:"exec,omitempty"`
	Fault      *rawFault      `yaml:"fault,omitempty"`
	Traffic    *rawTraffic    `yaml:"traffic,omitempty"`
	TrafficEnd *rawTrafficEnd `yaml:"traffic_end,omitempty"`
	AskHeld    *rawAskHeld    `yaml:"ask_held,omitempty"`
	Checks     []rawCheck     `yaml:"checks,omitempty"`
}

type rawAskHeld struct {
	Lost *int `yaml:"lost,omitempty"`
}

type rawTraffic struct {
	From  string `yaml:"from,omitempty"`
	URL   string `yaml:"url,omitempty"`
	Every string `yaml:"every,omitempty"`
}

type rawTrafficEnd struct {
	MaxOutage string `yaml:"max_outage,omitempty"`
	MaxFailed *int   `yaml:"max_failed,omitempty"`
}

type rawFault struct {
	Node string `yaml:"node,omitempty"`
	Web  string `yaml:"web,omitempty"`
}

type rawServiceRef struct {
	Node    string `yaml:"node,omitempty"`
	Service string `yaml:"service,omitempty"`
}

type rawApply struct {
	Node  string   `yaml:"node,omitempty"`
	Rules []string `yaml:"rules,omitempty"`
}

type rawLink struct {
	Node  string `yaml:"node,omitempty"`
	Dev   string `yaml:"dev,omitempty"`
	State string `yaml:"state,omitempty"`
}

type rawNetem struct {
	Node  string  `yaml:"node,omitempty"`
	Dev   string  `yaml:"dev,omitempty"`
	Delay string  `yaml:"delay,omitempty"`
	Loss  float64 `yaml:"loss,omitempty"`
	Rate  string  `yaml:"rate,omitempty"`
}

type rawHoldAct struct {
	From        string `yaml:"from,omitempty"`
	URL         string `yaml:"url,omitempty"`
	Connections int    `yaml:"connections,omitempty"`
	Started     bool   `yaml:"started,omitempty"`
}

type rawWait struct {
	For    string   `yaml:"for,omitempty"`
	Until  *rawCond `yaml:"until,omitempty"`
	Within string   `yaml:"within,omitempty"`
}

type rawCond struct {
	Neighbour *rawNeighbour `yaml:"neighbour,omitempty"`
	Synced    *rawSynced    `yaml:"synced,omitempty"`
	VRRP      *rawVRRPState `yaml:"vrrp,omitempty"`
	Owner     *rawOwner     `yaml:"owner,omitempty"`
	Server    *rawInTable   `yaml:"server,omitempty"`
	Answers   *rawAnswers   `yaml:"answers,omitempty"`
}

type rawVRRPState struct {
	Node     string `yaml:"node,omitempty"`
	Instance string `yaml:"instance,omitempty"`
	State    string `yaml:"state,omitempty"`
}

type rawSynced struct {
	Node string `yaml:"node,omitempty"`
}

type rawNeighbour struct {
	Node    string `yaml:"node,omitempty"`
	Address string `yaml:"address,omitempty"`
	Of      string `yaml:"of,omitempty"`
}

type rawOwner struct {
	Address string  `yaml:"address,omitempty"`
	Node    *string `yaml:"node,omitempty"`
	Only    bool    `yaml:"only,omitempty"`
}

type rawInTable struct {
	Service string `yaml:"service,omitempty"`
	Address string `yaml:"address,omitempty"`
	Present *bool  `yaml:"present,omitempty"`
	Weight  *int   `yaml:"weight,omitempty"`
}

type rawAnswers struct {
	From string `yaml:"from,omitempty"`
	URL  string `yaml:"url,omitempty"`
}

type rawExec struct {
	Node    string   `yaml:"node,omitempty"`
	Command []string `yaml:"command,omitempty"`
	Status  int      `yaml:"status,omitempty"`
}

// Bounds of a step's durations.
const (
	maxWait  = 10 * time.Minute
	maxHeld  = 1000
	maxRules = 100
)

// parseSteps validates a scenario's steps in order. spec follows the apply
// steps, so that each step is checked against the lab as the steps before it
// left it.
func parseSteps(s *Scenario, raw []rawStep, fail failFunc) ([]lab.Step, error) {
	spec := s.Spec.Clone()
	var out []lab.Step
	for i, rs := range raw {
		field := fmt.Sprintf("steps[%d]", i)
		st := lab.Step{Name: rs.Name}
		if st.Name == "" {
			return nil, fail(field+".name", "missing (what the step does, in a few words)")
		}
		a, err := parseAction(s, &spec, field, rs, fail)
		if err != nil {
			return nil, err
		}
		st.Action = a
		for j, rc := range rs.Checks {
			c, err := parseCheck(s, fmt.Sprintf("%s.checks[%d]", field, j), rc, fail)
			if err != nil {
				return nil, err
			}
			st.Checks = append(st.Checks, c)
		}
		out = append(out, st)
	}
	return out, nil
}

// actionNames lists a step's possible actions, for messages.
const actionNames = "stop, kill, start, restart, apply, link, netem, hold, release, ask_held, wait, exec, fault, traffic or traffic_end"

func parseAction(s *Scenario, spec *lab.Spec, field string, rs rawStep, fail failFunc) (lab.Action, error) {
	var a lab.Action
	n := 0
	for _, set := range []bool{rs.Stop != nil, rs.Kill != nil, rs.Start != nil, rs.Restart != nil, rs.Apply != nil,
		rs.Link != nil, rs.Netem != nil, rs.Hold != nil, rs.Release, rs.Wait != nil, rs.Exec != nil, rs.Fault != nil,
		rs.Traffic != nil, rs.TrafficEnd != nil, rs.AskHeld != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return a, fail(field, "give exactly one action: %s (%d given)", actionNames, n)
	}
	node := func(f, name string) error {
		if name == "" {
			return fail(f, "missing (a node of the topology)")
		}
		if _, ok := s.Topology.Nodes[name]; !ok {
			return fail(f, "node %q is not in the topology", name)
		}
		return nil
	}
	service := func(kind lab.ActionKind, r *rawServiceRef) (lab.Action, error) {
		f := field + "." + string(kind)
		a := lab.Action{Kind: kind, Node: r.Node, Service: r.Service}
		if err := node(f+".node", r.Node); err != nil {
			return a, err
		}
		if a.Service == "" {
			a.Service = lab.ServiceWeb
		}
		ns, _ := spec.Node(r.Node)
		names := ServiceNames(ns)
		for _, x := range names {
			if x == a.Service {
				return a, nil
			}
		}
		if len(names) == 0 {
			return a, fail(f+".service", "%q: node %s runs no service (no web server, no commands)", a.Service, r.Node)
		}
		return a, fail(f+".service", "%q is not one of %s's services (%s)", a.Service, r.Node, strings.Join(names, ", "))
	}
	switch {
	case rs.Stop != nil:
		return service(lab.ActStop, rs.Stop)
	case rs.Kill != nil:
		return service(lab.ActKill, rs.Kill)
	case rs.Start != nil:
		return service(lab.ActStart, rs.Start)
	case rs.Restart != nil:
		return service(lab.ActRestart, rs.Restart)
	case rs.Apply != nil:
		f := field + ".apply"
		a = lab.Action{Kind: lab.ActApply, Node: rs.Apply.Node, Rules: rs.Apply.Rules}
		if a.Node == "" {
			a.Node = spec.Director()
		}
		if err := node(f+".node", a.Node); err != nil {
			return a, err
		}
		if len(a.Rules) == 0 || len(a.Rules) > maxRules {
			return a, fail(f+".rules", "give 1 to %d ipvsadm command lines (%d given)", maxRules, len(a.Rules))
		}
		ns, _ := spec.Node(a.Node)
		rules := ipvsadm.Rules(lab.CloneServices(ns.Services))
		for i, line := range a.Rules {
			r, err := ipvsadm.ParseRule(line)
			if err == nil {
				err = rules.Exec(r)
			}
			if err != nil {
				return a, fail(fmt.Sprintf("%s.rules[%d]", f, i), "%q: %v", line, err)
			}
		}
		spec.SetServices(a.Node, []lab.Service(rules))
		return a, nil
	case rs.Link != nil:
		f := field + ".link"
		a = lab.Action{Kind: lab.ActLink, Node: rs.Link.Node, Dev: rs.Link.Dev}
		if err := node(f+".node", a.Node); err != nil {
			return a, err
		}
		if err := s.checkDev(f+".dev", a.Node, a.Dev, fail); err != nil {
			return a, err
		}
		switch rs.Link.State {
		case "up":
			a.Up = true
		case "down":
		default:
			return a, fail(f+".state", "%q: give up or down", rs.Link.State)
		}
		return a, nil
	case rs.Netem != nil:
		f := field + ".netem"
		a = lab.Action{Kind: lab.ActNetem, Node: rs.Netem.Node, Dev: rs.Netem.Dev}
		if err := node(f+".node", a.Node); err != nil {
			return a, err
		}
		if err := s.checkDev(f+".dev", a.Node, a.Dev, fail); err != nil {
			return a, err
		}
		if rs.Netem.Delay != "" {
			d, err := time.ParseDuration(rs.Netem.Delay)
			if err != nil || d < 0 || d > time.Minute {
				return a, fail(f+".delay", "%q is not a duration from 0 to 1m (e.g. 50ms)", rs.Netem.Delay)
			}
			a.Netem.Delay = d
		}
		if rs.Netem.Loss < 0 || rs.Netem.Loss > 100 {
			return a, fail(f+".loss", "%g is not a percentage (0..100)", rs.Netem.Loss)
		}
		a.Netem.Loss = rs.Netem.Loss
		if rs.Netem.Rate != "" {
			r, err := parseRate(rs.Netem.Rate)
			if err != nil {
				return a, fail(f+".rate", "%q: %v", rs.Netem.Rate, err)
			}
			a.Netem.Rate = r
		}
		return a, nil
	case rs.Hold != nil:
		f := field + ".hold"
		a = lab.Action{Kind: lab.ActHold, Node: rs.Hold.From, HTTP: rs.Hold.URL, Count: rs.Hold.Connections, Started: rs.Hold.Started}
		if a.Node == "" {
			a.Node = "client"
		}
		if err := node(f+".from", a.Node); err != nil {
			return a, err
		}
		if u, err := url.Parse(a.HTTP); err != nil || u.Scheme != "http" || u.Host == "" {
			return a, fail(f+".url", "%q is not an http:// URL", a.HTTP)
		}
		if a.Count < 1 || a.Count > maxHeld {
			return a, fail(f+".connections", "%d is out of range (1..%d)", a.Count, maxHeld)
		}
		return a, nil
	case rs.Release:
		return lab.Action{Kind: lab.ActRelease}, nil
	case rs.Wait != nil:
		return parseWait(s, spec, field+".wait", rs.Wait, fail, node)
	case rs.Traffic != nil:
		f := field + ".traffic"
		a = lab.Action{Kind: lab.ActTraffic, Node: rs.Traffic.From, HTTP: rs.Traffic.URL}
		if a.Node == "" {
			a.Node = "client"
		}
		if err := node(f+".from", a.Node); err != nil {
			return a, err
		}
		if u, err := url.Parse(a.HTTP); err != nil || u.Scheme != "http" || u.Host == "" {
			return a, fail(f+".url", "%q is not an http:// URL", a.HTTP)
		}
		d, err := time.ParseDuration(rs.Traffic.Every)
		if err != nil || d < time.Millisecond || d > time.Minute {
			return a, fail(f+".every", "%q is not a duration from 1ms to 1m (e.g. 10ms)", rs.Traffic.Every)
		}
		a.Every = d
		return a, nil
	case rs.AskHeld != nil:
		a = lab.Action{Kind: lab.ActAskHeld, Lost: rs.AskHeld.Lost}
		if a.Lost != nil && (*a.Lost < 0 || *a.Lost > maxHeld) {
			return a, fail(field+".ask_held.lost", "%d is out of range (0..%d)", *a.Lost, maxHeld)
		}
		return a, nil
	case rs.TrafficEnd != nil:
		f := field + ".traffic_end"
		a = lab.Action{Kind: lab.ActTrafficEnd, MaxFailed: rs.TrafficEnd.MaxFailed}
		if rs.TrafficEnd.MaxOutage != "" {
			d, err := time.ParseDuration(rs.TrafficEnd.MaxOutage)
			if err != nil || d <= 0 || d > maxWait {
				return a, fail(f+".max_outage", "%q is not a duration from 1ms to %v", rs.TrafficEnd.MaxOutage, maxWait)
			}
			a.MaxOutage = d
		}
		if a.MaxFailed != nil && *a.MaxFailed < 0 {
			return a, fail(f+".max_failed", "%d is negative", *a.MaxFailed)
		}
		return a, nil
	case rs.Fault != nil:
		f := field + ".fault"
		a = lab.Action{Kind: lab.ActFault, Node: rs.Fault.Node, Answer: lab.WebAnswer(rs.Fault.Web)}
		if err := node(f+".node", a.Node); err != nil {
			return a, err
		}
		if ns, _ := spec.Node(a.Node); ns.Web == nil {
			return a, fail(f+".node", "%s runs no web server", a.Node)
		}
		switch a.Answer {
		case lab.AnswerOK, lab.AnswerError, lab.AnswerStall:
		default:
			return a, fail(f+".web", "%q: give ok, error (500) or stall (no answer)", rs.Fault.Web)
		}
		return a, nil
	default:
		f := field + ".exec"
		a = lab.Action{Kind: lab.ActExec, Node: rs.Exec.Node, Command: rs.Exec.Command, Status: rs.Exec.Status}
		if err := node(f+".node", a.Node); err != nil {
			return a, err
		}
		if len(a.Command) == 0 || a.Command[0] == "" {
			return a, fail(f+".command", "missing (the program and its arguments, as a list)")
		}
		if a.Status < 0 || a.Status > 255 {
			return a, fail(f+".status", "%d is not an exit status (0..255)", a.Status)
		}
		return a, nil
	}
}

func parseWait(s *Scenario, spec *lab.Spec, f string, w *rawWait, fail failFunc, node func(f, name string) error) (lab.Action, error) {
	a := lab.Action{Kind: lab.ActWait}
	dur := func(field, v string) (time.Duration, error) {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > maxWait {
			return 0, fail(field, "%q is not a duration from 1ms to %v (e.g. 3s)", v, maxWait)
		}
		return d, nil
	}
	switch {
	case w.For != "" && w.Until != nil:
		return a, fail(f, "give for (a duration) or until (a condition, with within), not both")
	case w.For != "":
		if w.Within != "" {
			return a, fail(f+".within", "bounds until; a wait for %s needs none", w.For)
		}
		var err error
		a.For, err = dur(f+".for", w.For)
		return a, err
	case w.Until == nil:
		return a, fail(f, "give for (a duration) or until (a condition, with within)")
	}
	if w.Within == "" {
		return a, fail(f+".within", "missing: a wait until a condition needs a bound (e.g. within: 5s)")
	}
	var err error
	if a.Within, err = dur(f+".within", w.Within); err != nil {
		return a, err
	}
	c := &lab.Condition{}
	u := w.Until
	n := 0
	for _, set := range []bool{u.Owner != nil, u.Server != nil, u.Answers != nil, u.Neighbour != nil, u.Synced != nil, u.VRRP != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return a, fail(f+".until", "give exactly one condition: owner, server, answers, neighbour, synced or vrrp")
	}
	switch {
	case u.VRRP != nil:
		ff := f + ".until.vrrp"
		if err := node(ff+".node", u.VRRP.Node); err != nil {
			return a, err
		}
		ns, _ := spec.Node(u.VRRP.Node)
		var names []string
		if ns.Keepalived != nil {
			for _, in := range ns.Keepalived.VRRP {
				names = append(names, in.Name)
			}
		}
		if len(names) == 0 {
			return a, fail(ff+".node", "%s runs no keepalived VRRP instance", u.VRRP.Node)
		}
		if !slices.Contains(names, u.VRRP.Instance) {
			return a, fail(ff+".instance", "%q is not a VRRP instance of %s (%s)", u.VRRP.Instance, u.VRRP.Node, strings.Join(names, ", "))
		}
		st := lab.VRRPState(u.VRRP.State)
		if !slices.Contains([]lab.VRRPState{lab.VRRPMaster, lab.VRRPBackup, lab.VRRPFault, lab.VRRPInit}, st) {
			return a, fail(ff+".state", "%q: give MASTER, BACKUP, FAULT or INIT", u.VRRP.State)
		}
		c.VRRPNode, c.Instance, c.State = u.VRRP.Node, u.VRRP.Instance, st
	case u.Synced != nil:
		if err := node(f+".until.synced.node", u.Synced.Node); err != nil {
			return a, err
		}
		c.Synced = u.Synced.Node
	case u.Neighbour != nil:
		ff := f + ".until.neighbour"
		addr, err := netip.ParseAddr(u.Neighbour.Address)
		if err != nil || !addr.Is4() {
			return a, fail(ff+".address", "%q is not an IPv4 address", u.Neighbour.Address)
		}
		c.Address, c.From, c.NeighbourOf = addr, u.Neighbour.Node, u.Neighbour.Of
		if c.From == "" {
			c.From = "client"
		}
		if err := node(ff+".node", c.From); err != nil {
			return a, err
		}
		if err := node(ff+".of", c.NeighbourOf); err != nil {
			return a, err
		}
	case u.Owner != nil:
		addr, err := netip.ParseAddr(u.Owner.Address)
		if err != nil {
			return a, fail(f+".until.owner.address", "%q is not an IP address", u.Owner.Address)
		}
		if u.Owner.Node == nil {
			return a, fail(f+".until.owner.node", "missing (the node that must hold the address; \"\" for none)")
		}
		if *u.Owner.Node != "" {
			if err := node(f+".until.owner.node", *u.Owner.Node); err != nil {
				return a, err
			}
		}
		c.Address, c.Owner, c.Only = addr, u.Owner.Node, u.Owner.Only
	case u.Server != nil:
		ff := f + ".until.server"
		ap, err := netip.ParseAddrPort(u.Server.Address)
		if err != nil {
			return a, fail(ff+".address", "%q is not address:port", u.Server.Address)
		}
		found := false
		for _, ns := range spec.Nodes {
			for _, svc := range ns.Services {
				found = found || svc.Key() == u.Server.Service
			}
		}
		if !found {
			return a, fail(ff+".service", "%q is not a service of the scenario (name it as the kernel does: tcp:203.0.113.1:80, udp:203.0.113.1:53, fwm:10)", u.Server.Service)
		}
		c.Service, c.Server, c.Present = u.Server.Service, ap, true
		if u.Server.Present != nil {
			c.Present = *u.Server.Present
		}
		if w := u.Server.Weight; w != nil {
			if !c.Present || *w < 0 || *w > 65535 {
				return a, fail(ff+".weight", "%d: a weight (0..65535) of a server that is present", *w)
			}
			c.Weight = w
		}
	default:
		ff := f + ".until.answers"
		c.From, c.URL = u.Answers.From, u.Answers.URL
		if c.From == "" {
			c.From = "client"
		}
		if err := node(ff+".from", c.From); err != nil {
			return a, err
		}
		if pu, err := url.Parse(c.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return a, fail(ff+".url", "%q is not an http:// or https:// URL", c.URL)
		}
	}
	a.Until = c
	return a, nil
}

// checkDev checks that dev is one of node's interfaces in the topology.
func (s *Scenario) checkDev(field, node, dev string, fail failFunc) error {
	ifaces := s.Topology.Interfaces(node)
	for _, d := range ifaces {
		if d == dev {
			return nil
		}
	}
	return fail(field, "%q is not an interface of %s (%s)", dev, node, strings.Join(ifaces, ", "))
}

// parseRate reads a rate as tc writes it: 1mbit, 500kbit, 100kbps (bytes), 1gbit.
func parseRate(v string) (uint64, error) {
	units := []struct {
		suffix string
		bytes  float64
	}{{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8}, {"gbps", 1e9}, {"mbps", 1e6}, {"kbps", 1e3}, {"bps", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			x, err := strconv.ParseFloat(num, 64)
			if err != nil || x <= 0 {
				break
			}
			r := uint64(x * u.bytes)
			if r < 1 {
				break
			}
			return r, nil
		}
	}
	return 0, fmt.Errorf("not a rate (e.g. 1mbit, 500kbit, 100kbps)")
}

// ServiceNames lists a node's services as steps name them: web for its web
// server, then each command by its program's name (cmdN when two share one).
func ServiceNames(ns lab.NodeSpec) []string {
	var out []string
	if ns.Web != nil {
		out = append(out, lab.ServiceWeb)
	}
	for i := range ns.Commands {
		out = append(out, CommandName(ns, i))
	}
	if ns.Keepalived != nil {
		out = append(out, ServiceKeepalived)
	}
	return out
}

// ServiceKeepalived names the keepalived lvslab starts on a node with a
// keepalived section.
const ServiceKeepalived = "keepalived"

// CommandName is how steps name a node's i-th command: its program's name,
// or cmd<i> when another command runs the same program.
func CommandName(ns lab.NodeSpec, i int) string {
	prog := path.Base(ns.Commands[i][0])
	for j, c := range ns.Commands {
		if j != i && path.Base(c[0]) == prog {
			return fmt.Sprintf("cmd%d", i)
		}
	}
	return prog
}
