package scenario

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/topo"
	"gopkg.in/yaml.v3"
)

// Marshal writes s in the scenario file format: Parse of the result gives s
// back (its spec and checks; services are written as services, not as the
// ipvsadm rules they may have come from). The topology is named by its
// absolute path, so the file can live anywhere.
func Marshal(s *Scenario) ([]byte, error) {
	raw := rawScenario{
		Version: 1, Name: s.Name, Description: s.Description,
		Topology: topo.AbsPath(s.Topology.File), Nodes: map[string]*rawNode{},
	}
	for _, n := range s.Spec.Nodes {
		raw.Nodes[n.Name] = marshalNode(n)
	}
	for _, c := range s.Checks {
		raw.Checks = append(raw.Checks, marshalCheck(c))
	}
	for _, st := range s.Steps {
		raw.Steps = append(raw.Steps, marshalStep(st))
	}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(raw); err != nil {
		return nil, fmt.Errorf("scenario %s: %w", s.Name, err)
	}
	return b.Bytes(), enc.Close()
}

// Write marshals s into the file path.
func Write(path string, s *Scenario) error {
	b, err := Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func marshalNode(n lab.NodeSpec) *rawNode {
	rn := &rawNode{Commands: n.Commands}
	if n.Keepalived != nil {
		rk := &rawKeepalived{}
		for _, v := range n.Keepalived.VRRP {
			rv := rawVRRP{Instance: v.Name, Interface: v.Interface, RouterID: v.RouterID, State: v.State,
				Priority: v.Priority, AdvertInt: v.AdvertInt, NoPreempt: v.NoPreempt, SyncGroup: v.SyncGroup}
			for _, p := range v.VIPs {
				rv.VIPs = append(rv.VIPs, p.String())
			}
			rk.VRRP = append(rk.VRRP, rv)
		}
		if c := n.Keepalived.Check; c != nil {
			kind := "tcp"
			if c.Kind == lab.CheckHTTPGet {
				kind = "http"
			}
			retry, delay := c.Retry, c.DelayBeforeRetry
			rc := &rawHealthCheck{Kind: kind, Path: c.Path, StatusCode: c.StatusCode, DelayLoop: c.DelayLoop, ConnectTimeout: c.ConnectTimeout,
				Retry: &retry, DelayBeforeRetry: &delay, InhibitOnFailure: c.InhibitOnFailure}
			if c.SorryServer.IsValid() {
				rc.SorryServer = c.SorryServer.String()
			}
			rk.Check = rc
		}
		rn.Keepalived = rk
	}
	for _, a := range n.Addresses {
		if rn.Addresses == nil {
			rn.Addresses = map[string][]string{}
		}
		rn.Addresses[a.Dev] = append(rn.Addresses[a.Dev], a.Prefix.String())
	}
	for _, r := range n.Routes {
		rr := rawRoute{To: r.Dst.String(), Dev: r.Dev}
		if r.Via.IsValid() {
			rr.Via = r.Via.String()
		}
		rn.Routes = append(rn.Routes, rr)
	}
	for _, sc := range n.Sysctls {
		if rn.Sysctls == nil {
			rn.Sysctls = map[string]string{}
		}
		rn.Sysctls[sc.Key] = sc.Value
	}
	if len(n.Services) > 0 || n.Timeouts != nil {
		rn.IPVS = &rawIPVS{}
		for _, svc := range n.Services {
			rn.IPVS.Services = append(rn.IPVS.Services, marshalService(svc))
		}
		if t := n.Timeouts; t != nil {
			rn.IPVS.Timeouts = &rawTimeouts{TCP: t.TCP, TCPFin: t.TCPFin, UDP: t.UDP}
		}
	}
	if w := n.Web; w != nil {
		rn.Web = &rawWeb{HTTP: ints(w.HTTP), HTTPS: ints(w.HTTPS), UDP: ints(w.UDP)}
	}
	for _, m := range n.Marks {
		if rn.Firewall == nil {
			rn.Firewall = &rawFirewall{}
		}
		rn.Firewall.Marks = append(rn.Firewall.Marks, rawMark{
			Protocol: string(m.Protocol), Destination: m.Destination.String(), Ports: ints(m.Ports), Mark: m.Mark,
		})
	}
	return rn
}

func marshalService(svc lab.Service) rawService {
	rs := rawService{Scheduler: string(svc.Scheduler)}
	if svc.FWMark != 0 {
		rs.FWMark, rs.IPv6 = svc.FWMark, svc.IPv6
	} else {
		rs.Protocol, rs.Address = string(svc.Protocol), svc.Addr.String()
	}
	for _, f := range svc.SchedFlags {
		rs.Flags = append(rs.Flags, string(f))
	}
	if svc.Persistent {
		rs.Persistent = int(svc.Timeout)
		if svc.Netmask != svc.MaxNetmask() {
			rs.Netmask = lab.NetmaskString(svc.Netmask, svc.Is6())
		}
	}
	for _, srv := range svc.Servers {
		r := rawServer{Address: srv.Addr.String(), Method: string(srv.Method), Weight: &srv.Weight}
		if srv.Upper != 0 {
			u := int64(srv.Upper)
			r.Upper = &u
		}
		if srv.Lower != 0 {
			l := int64(srv.Lower)
			r.Lower = &l
		}
		rs.Servers = append(rs.Servers, r)
	}
	return rs
}

func marshalCheck(c lab.Check) rawCheck {
	rc := rawCheck{Name: c.Name, From: c.From, Sources: c.Sources, Hint: c.Hint}
	if c.Points != 1 {
		p := c.Points
		rc.Points = &p
	}
	switch c.Kind() {
	case lab.CheckHTTP:
		rc.HTTP = &rawHTTP{URL: c.HTTP, Requests: c.Requests, Hold: c.Hold, Concurrency: c.Concurrency}
	case lab.CheckUDP:
		rc.UDP = &rawUDP{Address: c.UDP.String(), Requests: c.Requests}
	case lab.CheckARP:
		rc.ARP = &rawARP{Target: c.ARP.String(), Dev: c.Dev}
		answerers := c.Expect.Answerers
		rc.Expect.Answerers = &answerers
	}
	e := c.Expect
	switch {
	case e.Model:
		rc.Expect.Sequence = "model"
	case e.Sequence != nil:
		rc.Expect.Sequence = e.Sequence
	}
	rc.Expect.Counts, rc.Expect.Sticky, rc.Expect.Servers, rc.Expect.Failures = e.Counts, e.Sticky, e.Servers, e.Failures
	if c.Capture != nil {
		rc.Capture = &rawCapture{Node: c.Capture.Node, Dev: c.Capture.Dev, Filter: c.Capture.Filter}
	}
	for _, m := range e.Frames {
		addr := func(a netip.Addr) string {
			if a.IsValid() {
				return a.String()
			}
			return ""
		}
		rc.Expect.Frames = append(rc.Expect.Frames, rawFrame{From: m.From, To: m.To, Src: addr(m.Src), Dst: addr(m.Dst),
			InnerSrc: addr(m.InnerSrc), InnerDst: addr(m.InnerDst), Count: m.Count})
	}
	return rc
}

func ints(ports []uint16) []int {
	out := make([]int, len(ports))
	for i, p := range ports {
		out[i] = int(p)
	}
	return out
}

func marshalStep(st lab.Step) rawStep {
	rs := rawStep{Name: st.Name}
	a := st.Action
	ref := &rawServiceRef{Node: a.Node, Service: a.Service}
	switch a.Kind {
	case lab.ActStop:
		rs.Stop = ref
	case lab.ActKill:
		rs.Kill = ref
	case lab.ActStart:
		rs.Start = ref
	case lab.ActRestart:
		rs.Restart = ref
	case lab.ActApply:
		rs.Apply = &rawApply{Node: a.Node, Rules: a.Rules}
	case lab.ActLink:
		state := "down"
		if a.Up {
			state = "up"
		}
		rs.Link = &rawLink{Node: a.Node, Dev: a.Dev, State: state}
	case lab.ActNetem:
		rn := &rawNetem{Node: a.Node, Dev: a.Dev, Loss: a.Netem.Loss}
		if a.Netem.Delay != 0 {
			rn.Delay = a.Netem.Delay.String()
		}
		if a.Netem.Rate != 0 {
			rn.Rate = fmt.Sprintf("%dbps", a.Netem.Rate)
		}
		rs.Netem = rn
	case lab.ActHold:
		rs.Hold = &rawHoldAct{From: a.Node, URL: a.HTTP, Connections: a.Count, Started: a.Started}
	case lab.ActRelease:
		rs.Release = true
	case lab.ActWait:
		w := &rawWait{}
		if a.Until == nil {
			w.For = a.For.String()
		} else {
			w.Within = a.Within.String()
			c := a.Until
			switch {
			case c.VRRPNode != "":
				w.Until = &rawCond{VRRP: &rawVRRPState{Node: c.VRRPNode, Instance: c.Instance, State: string(c.State)}}
			case c.Synced != "":
				w.Until = &rawCond{Synced: &rawSynced{Node: c.Synced}}
			case c.NeighbourOf != "":
				w.Until = &rawCond{Neighbour: &rawNeighbour{Node: c.From, Address: c.Address.String(), Of: c.NeighbourOf}}
			case c.Owner != nil:
				w.Until = &rawCond{Owner: &rawOwner{Address: c.Address.String(), Node: c.Owner, Only: c.Only}}
			case c.Server.IsValid():
				present := c.Present
				w.Until = &rawCond{Server: &rawInTable{Service: c.Service, Address: c.Server.String(), Present: &present, Weight: c.Weight}}
			default:
				w.Until = &rawCond{Answers: &rawAnswers{From: c.From, URL: c.URL}}
			}
		}
		rs.Wait = w
	case lab.ActExec:
		rs.Exec = &rawExec{Node: a.Node, Command: a.Command, Status: a.Status}
	case lab.ActFault:
		rs.Fault = &rawFault{Node: a.Node, Web: string(a.Answer)}
	case lab.ActAskHeld:
		rs.AskHeld = &rawAskHeld{Lost: a.Lost}
	case lab.ActTraffic:
		rs.Traffic = &rawTraffic{From: a.Node, URL: a.HTTP, Every: a.Every.String()}
	case lab.ActTrafficEnd:
		te := &rawTrafficEnd{MaxFailed: a.MaxFailed}
		if a.MaxOutage != 0 {
			te.MaxOutage = a.MaxOutage.String()
		}
		rs.TrafficEnd = te
	}
	for _, c := range st.Checks {
		rs.Checks = append(rs.Checks, marshalCheck(c))
	}
	return rs
}
