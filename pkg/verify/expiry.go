package verify

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Connection expiry and persistence templates, as the director's timers run
// them (6.1.176 net/netfilter/ipvs/ip_vs_conn.c ip_vs_conn_expire,
// ip_vs_proto_tcp.c tcp_timeouts, ip_vs_proto_udp.c udp_timeouts,
// ip_vs_core.c ip_vs_sched_persist, ip_vs_conn.c ip_vs_check_template).

const (
	// timeWait is how long a closed TCP connection stays (TIME_WAIT; ipvsadm
	// --set does not change it). lvslab's clients read to the server's close and
	// then close, which leaves the director's entry in TIME_WAIT (seen in the
	// sandbox: "TCP 01:58 TIME_WAIT"). A connection reset instead would be in
	// CLOSE for 10 s; lvslab's clients do not reset.
	timeWait = 2 * time.Minute
	// rearm is how long a template that still controls connections lives on
	// each time its timer runs out (ip_vs_conn_expire: cp->timeout = 60*HZ).
	rearm = time.Minute
	// lag bounds how far the model's clock (when lvslab sent) and the kernel's
	// (when the packet passed the director) may part.
	lag = 250 * time.Millisecond
)

// Timeouts are the director's connection timeouts (ipvsadm --set).
type Timeouts struct {
	TCP time.Duration // ESTABLISHED: 15 min by default
	UDP time.Duration // 5 min by default
}

// DefaultTimeouts are the kernel's (tcp_timeouts, udp_timeouts).
func DefaultTimeouts() Timeouts { return Timeouts{TCP: 15 * time.Minute, UDP: 5 * time.Minute} }

// Persistence is how a persistent service keeps clients (-p, -M) and the
// director's net.ipv4.vs.expire_quiescent_template.
type Persistence struct {
	Timeout         time.Duration // -p
	Netmask         int           // -M as a prefix length
	ExpireQuiescent bool          // a template of a server of weight 0 is dropped at its next use
}

// slack is how late the kernel's timer wheel may fire a timer of length d
// (kernel/time/timer.c: a level's granularity is at most 8/63 of the times it
// holds), plus the clocks' lag.
func slack(d time.Duration) time.Duration { return d/7 + 10*time.Millisecond + lag }

// simConn is a connection the model placed, until it expires.
type simConn struct {
	dest    *Dest
	active  bool
	expires time.Duration
	timeout time.Duration
	tmpl    *template
}

// template is a persistence template (client group -> server).
type template struct {
	key      netip.Prefix
	dest     *Dest
	expires  time.Duration
	timeout  time.Duration
	controls int  // connections it controls (n_control)
	hashed   bool // still found by new connections (ip_vs_check_template unhashes)
}

// sensitive reports whether expiry can change what the scheduler picks: for
// count-weighing schedulers, thresholds and persistence.
func (s *Sim) sensitive() bool {
	if s.Persist != nil {
		return true
	}
	switch s.Sched.(type) {
	case *rr, *wrr, *sh, *dh, *mh, fo:
		for _, d := range s.Dests {
			if d.Upper != 0 {
				return true
			}
		}
		return false
	}
	return true
}

// Advance moves the model's clock to t (since the model began), expiring on
// the way every connection and template whose timer ran out, in time order.
func (s *Sim) Advance(t time.Duration) {
	for {
		var next time.Duration = -1
		var c *simConn
		var tp *template
		for _, x := range s.conns {
			if x.expires <= t && (next < 0 || x.expires < next) {
				next, c, tp = x.expires, x, nil
			}
		}
		for _, x := range s.tmpls {
			if x.expires <= t && (next < 0 || x.expires < next) {
				next, c, tp = x.expires, nil, x
			}
		}
		if next < 0 {
			break
		}
		s.Now = next
		if c != nil {
			s.expireConn(c)
		} else {
			s.expireTemplate(tp)
		}
	}
	if t > s.Now {
		s.Now = t
	}
}

func (s *Sim) noteTimer(e, timeout time.Duration) {
	if u := e + slack(timeout); u > s.unsureUntil {
		s.unsureUntil = u
	}
}

func (s *Sim) expireConn(c *simConn) {
	s.conns = slices.DeleteFunc(s.conns, func(x *simConn) bool { return x == c })
	s.unbind(c.dest, c.active)
	if c.tmpl != nil {
		c.tmpl.controls--
	}
	s.noteTimer(c.expires, c.timeout)
}

func (s *Sim) expireTemplate(t *template) {
	s.noteTimer(t.expires, t.timeout)
	if t.controls > 0 {
		t.expires += rearm
		t.timeout = rearm
		return
	}
	s.tmpls = slices.DeleteFunc(s.tmpls, func(x *template) bool { return x == t })
	t.dest.Persist--
	if !s.atCrossing {
		s.clearBelow(t.dest)
	}
}

// checkTiming notes, before a connection at Now, whether a timer near Now
// could have run on the kernel's side of it rather than the model's.
func (s *Sim) checkTiming() {
	if s.Unsure != "" || !s.sensitive() {
		return
	}
	if s.Now < s.unsureUntil {
		s.Unsure = fmt.Sprintf("a connection at %v came within the timer slack of an expiry the model ran (until %v)", s.Now.Round(time.Millisecond), s.unsureUntil.Round(time.Millisecond))
		return
	}
	for _, c := range s.conns {
		if c.expires < s.Now+lag {
			s.Unsure = fmt.Sprintf("a connection at %v came within %v of an expiry due at %v", s.Now.Round(time.Millisecond), lag, c.expires.Round(time.Millisecond))
			return
		}
	}
	for _, t := range s.tmpls {
		if t.expires < s.Now+lag {
			s.Unsure = fmt.Sprintf("a connection at %v came within %v of a template's expiry due at %v", s.Now.Round(time.Millisecond), lag, t.expires.Round(time.Millisecond))
			return
		}
	}
}

// open records a new connection to d at Now.
func (s *Sim) open(d *Dest, hold bool, t *template) {
	s.bind(d, hold)
	timeout := timeWait
	switch {
	case s.Proto == lab.UDP:
		timeout = s.Timeouts.UDP
	case hold:
		timeout = s.Timeouts.TCP
	}
	s.conns = append(s.conns, &simConn{dest: d, active: hold, expires: s.Now + timeout, timeout: timeout, tmpl: t})
	if t != nil {
		t.controls++
	}
}

// Schedule takes one new connection at the model's clock as the director
// does: for a persistent service under the client group's template if it has
// one whose server is still usable (ip_vs_check_template: not deleted, and not
// quiesced when expire_quiescent_template is set), else by the scheduler, with
// a new template. It returns the server ("" for none).
func (s *Sim) Schedule(req Request, hold bool) string {
	s.checkTiming()
	if s.Persist == nil {
		return s.Connect(req, hold)
	}
	key, _ := req.Src.Prefix(s.Persist.Netmask)
	for _, t := range s.tmpls {
		if !t.hashed || t.key != key {
			continue
		}
		if !slices.Contains(s.Dests, t.dest) || s.Persist.ExpireQuiescent && t.dest.Weight == 0 {
			t.hashed = false // invalidated: it lives on until its timer, found by no one
			continue
		}
		s.open(t.dest, hold, t)
		// ip_vs_conn_put restarts the template's timer with its own timeout:
		// the persistence timeout, or 60 s once it has been re-armed.
		t.expires = s.Now + t.timeout
		return t.dest.Name
	}
	i := s.Sched.Pick(req, s.Dests)
	if i < 0 {
		return ""
	}
	d := s.Dests[i]
	t := &template{key: key, dest: d, expires: s.Now + s.Persist.Timeout, timeout: s.Persist.Timeout, hashed: true}
	s.tmpls = append(s.tmpls, t)
	s.bindTemplate(d)
	s.open(d, hold, t)
	return d.Name
}

// Templates maps each client group with a live template to its server.
func (s *Sim) Templates() map[netip.Prefix]string {
	out := map[netip.Prefix]string{}
	for _, t := range s.tmpls {
		if t.hashed {
			out[t.key] = t.dest.Name
		}
	}
	return out
}

// Seed gives a model made for a lab that has already served traffic the
// director's live connections and templates (from its connection table, with
// the seconds each has left), at the model's clock. owner names the server of
// an address ("" for one not in this service).
func (s *Sim) Seed(conns []Conn, owner func(netip.Addr) string) {
	for _, d := range s.Dests {
		d.Active, d.Inactive, d.Persist = 0, 0, 0
	}
	left := func(c Conn) time.Duration { return s.Now + time.Duration(c.Expires)*time.Second }
	for _, c := range conns {
		if !c.Template || s.Persist == nil {
			continue
		}
		i := indexOf(s.Dests, owner(c.Dest.Addr()))
		if i < 0 {
			continue
		}
		key, _ := c.Client.Addr().Prefix(s.Persist.Netmask)
		// The table's seconds are whole: a second of slack on either side.
		s.tmpls = append(s.tmpls, &template{key: key, dest: s.Dests[i], expires: left(c), timeout: time.Second, hashed: true})
		s.Dests[i].Persist++
	}
	for _, c := range conns {
		if c.Template {
			continue
		}
		i := indexOf(s.Dests, owner(c.Dest.Addr()))
		if i < 0 {
			continue
		}
		d := s.Dests[i]
		sc := &simConn{dest: d, active: c.State == "ESTABLISHED", expires: left(c), timeout: time.Second}
		if sc.active {
			d.Active++
		} else {
			d.Inactive++
		}
		if s.Persist != nil {
			key, _ := c.Client.Addr().Prefix(s.Persist.Netmask)
			for _, t := range s.tmpls {
				if t.key == key && t.dest == d {
					sc.tmpl = t
					t.controls++
				}
			}
		}
		s.conns = append(s.conns, sc)
	}
}

// Quiet returns how long to wait from t for no timer to be within its slack of
// the clock (at most a minute), so that the kernel's counts can be compared
// with the model's.
func (s *Sim) Quiet(t time.Duration) time.Duration {
	until := t
	if s.unsureUntil > until {
		until = s.unsureUntil
	}
	for changed := true; changed; {
		changed = false
		for _, c := range s.conns {
			if c.expires < until+lag && c.expires+slack(c.timeout) > until {
				until, changed = c.expires+slack(c.timeout), true
			}
		}
		for _, tp := range s.tmpls {
			if tp.expires < until+lag && tp.expires+slack(tp.timeout) > until {
				until, changed = tp.expires+slack(tp.timeout), true
			}
		}
	}
	return min(until-t, time.Minute)
}
