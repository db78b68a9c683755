package verify

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The models below follow the schedulers of Linux 6.1 (net/netfilter/ipvs/ip_vs_*.c)
// step by step, so that what a run must show is computed, not guessed; where the
// kernel changed between releases, the release decides (Kernel). Real servers
// are kept in the kernel's list order, which is the reverse of insertion; read it
// back with GetDestinations.

// Dest is a real server as a scheduler sees it.
type Dest struct {
	Name       string
	Weight     int
	Active     int  // established connections
	Inactive   int  // connections in other states (TIME_WAIT, FIN_WAIT, ...)
	Persist    int  // persistence templates bound to it
	Upper      int  // connection thresholds (ipvsadm -x, -y); 0 for none
	Lower      int  //
	Overloaded bool // IP_VS_DEST_F_OVERLOAD: schedulers pass it by
}

// total is ip_vs_dest_totalconns (6.1.176 ip_vs_conn.c): active + inactive,
// templates not counted; from 6.1.183 the kernel keeps it as totalconns.
func (d *Dest) total() int { return d.Active + d.Inactive }

// lowerVal is the lower threshold in force: -y, or 75% of -x rounded up
// (6.1.176 ip_vs_unbind_dest: total*4 < upper*3 clears; 6.1.192 ip_vs_ctl.c
// l_threshold_val = upper - upper>>2: the same bound).
func (d *Dest) lowerVal() int {
	if d.Lower != 0 {
		return d.Lower
	}
	return d.Upper - d.Upper>>2
}

// connOverhead is ip_vs_dest_conn_overhead (include/net/ip_vs.h):
// activeconns*256 + inactconns up to 6.1.182, activeconns*256 + totalconns
// from 6.1.183 (see Kernel.TotalConnsOverhead).
func connOverhead(total bool) func(*Dest) int64 {
	if total {
		return func(d *Dest) int64 { return int64(d.Active)<<8 + int64(d.Active+d.Inactive) }
	}
	return func(d *Dest) int64 { return int64(d.Active)<<8 + int64(d.Inactive) }
}

func (d *Dest) available() bool { return !d.Overloaded && d.Weight > 0 }

// Request is what a scheduler may look at.
type Request struct {
	Src     netip.Addr
	SrcPort uint16
	Dst     netip.Addr
	At      time.Time // when it was sent (zero: at the model's clock)
}

// Scheduler picks the index of a destination in dests (the kernel's list), or -1.
type Scheduler interface {
	Pick(req Request, dests []*Dest) int
}

// changer is implemented by schedulers that keep state the kernel resets when a
// real server is added, edited or removed.
type changer interface {
	changed(dests []*Dest)
}

// NewScheduler returns the model of a kernel scheduler as kernel k runs it;
// flags are ipvsadm's -b flags. It fails for a scheduler lvslab has no model
// of, and for one whose behaviour on k lvslab does not know.
func NewScheduler(k Kernel, name lab.Scheduler, flags ...lab.SchedFlag) (Scheduler, error) {
	total, known := k.TotalConnsOverhead()
	if !known && (name == lab.LC || name == lab.WLC) {
		return nil, fmt.Errorf("kernel %s: lvslab does not know whether its %s counts inactive or total connections (6.1 changed it in 6.1.183)", k, name)
	}
	overhead := connOverhead(total)
	switch name {
	case lab.RR:
		return &rr{}, nil
	case lab.WRR:
		return &wrr{}, nil
	case lab.LC:
		return lc{overhead: overhead}, nil
	case lab.WLC:
		return weighted{overhead: overhead}, nil
	case lab.SED:
		return weighted{overhead: activePlusOne}, nil
	case lab.NQ:
		return nq{}, nil
	case lab.FO:
		return fo{}, nil
	case lab.OVF:
		return ovf{}, nil
	case lab.SH:
		return &sh{port: slices.Contains(flags, lab.SHPort), fallback: slices.Contains(flags, lab.SHFallback)}, nil
	case lab.DH:
		return &dh{}, nil
	case lab.MH:
		return newMH(flags), nil
	case lab.LBLC, lab.LBLCR:
		return newLBLC(k, name)
	}
	return nil, fmt.Errorf("no model of scheduler %q", name)
}

// Sim is a service: its real servers and its scheduler, with the connections the
// model has placed. Build it as the kernel's table was built: AddDest in insertion
// order.
type Sim struct {
	Sched Scheduler
	Dests []*Dest // kernel list order

	// atCrossing: the kernel updates the overload flag only when totalconns
	// crosses a threshold (6.1.183 on); before, at every bind and unbind.
	atCrossing bool
	// trash keeps deleted real servers with their counts: the kernel keeps a
	// deleted destination (ip_vs_ctl.c, dest_trash) and gives it back, counts
	// and flags included, when the same server is added again.
	trash map[string]*Dest

	// Time: the model's clock (since it began), the service's protocol and
	// timeouts, its persistence (nil for none), the connections and templates
	// whose timers run.
	Now      time.Duration
	Proto    lab.Protocol
	Timeouts Timeouts
	Persist  *Persistence
	conns    []*simConn
	tmpls    []*template
	// Unsure says why the model cannot be sure of a prediction: a connection
	// came so close to a timer that the kernel may have run it on the other
	// side. Set once; the caller reads and clears it.
	Unsure      string
	unsureUntil time.Duration
}

// NewSim returns an empty service run by the named scheduler's model, as kernel
// k runs it.
func NewSim(k Kernel, sched lab.Scheduler, flags ...lab.SchedFlag) (*Sim, error) {
	s, err := NewScheduler(k, sched, flags...)
	if err != nil {
		return nil, err
	}
	total, _ := k.TotalConnsOverhead()
	sim := &Sim{Sched: s, atCrossing: total, trash: map[string]*Dest{}, Proto: lab.TCP, Timeouts: DefaultTimeouts()}
	sim.notify()
	return sim, nil
}

func (s *Sim) notify() {
	if c, ok := s.Sched.(changer); ok {
		c.changed(s.Dests)
	}
}

// remover is implemented by schedulers that keep a position in the list
// (ip_vs_scheduler.del_dest).
type remover interface {
	removing(dests []*Dest, i int)
}

// AddDest adds a real server, at the head of the list as the kernel does. A
// server deleted earlier comes back from the trash with its counts.
func (s *Sim) AddDest(name string, weight int) {
	s.AddDestThresholds(name, weight, 0, 0)
}

// AddDestThresholds adds a real server with connection thresholds (ipvsadm -a
// -x upper -y lower).
func (s *Sim) AddDestThresholds(name string, weight, upper, lower int) {
	d := s.trash[name]
	delete(s.trash, name)
	if d == nil {
		d = &Dest{Name: name}
	}
	d.Weight, d.Upper, d.Lower = weight, upper, lower
	s.Dests = append([]*Dest{d}, s.Dests...)
	s.notify()
}

// RemoveDest deletes a real server (ipvsadm -d): rr steps back to the server
// before it if it was the last one chosen (ip_vs_rr_del_dest); wrr, sh, dh and
// mh rebuild as on any change. Its connections stay with it, in the trash.
func (s *Sim) RemoveDest(name string) {
	i := indexOf(s.Dests, name)
	if i < 0 {
		return
	}
	if r, ok := s.Sched.(remover); ok {
		r.removing(s.Dests, i)
	}
	s.trash[name] = s.Dests[i]
	s.Dests = slices.Delete(s.Dests, i, i+1)
	s.notify()
}

// SetWeight edits a real server's weight (ipvsadm -e -w).
func (s *Sim) SetWeight(name string, weight int) {
	if i := indexOf(s.Dests, name); i >= 0 {
		s.Edit(name, weight, s.Dests[i].Upper, s.Dests[i].Lower)
	}
}

// Edit edits a real server as ipvsadm -e does: weight and thresholds at once
// (__ip_vs_update_dest). Thresholds that change clear or set the overload
// flag as the kernel k does; every edit tells the scheduler (upd_dest).
func (s *Sim) Edit(name string, weight, upper, lower int) {
	i := indexOf(s.Dests, name)
	if i < 0 {
		return
	}
	d := s.Dests[i]
	d.Weight = weight
	if s.atCrossing {
		// 6.1.192 ip_vs_ctl.c __ip_vs_update_dest: on a change,
		// __ip_vs_dest_update_overload(dest, 0).
		if upper != d.Upper || lower != d.Lower {
			d.Upper, d.Lower = upper, lower
			switch {
			case d.Upper == 0:
				d.Overloaded = false
			case d.total() >= d.Upper:
				d.Overloaded = true
			case d.total() < d.lowerVal():
				d.Overloaded = false
			}
		}
	} else {
		// 6.1.176 ip_vs_ctl.c __ip_vs_update_dest: a removed or raised upper
		// threshold clears the flag; a lowered one waits for the next bind.
		if upper == 0 || upper > d.Upper {
			d.Overloaded = false
		}
		d.Upper, d.Lower = upper, lower
	}
	s.notify()
}

// bind counts a new connection on d and sets the overload flag as
// ip_vs_bind_dest does: 6.1.176 when active+inactive reach the upper
// threshold (and at every later bind while they stay there); 6.1.183 on only
// when totalconns becomes equal to it.
func (s *Sim) bind(d *Dest, active bool) {
	if active {
		d.Active++
	} else {
		d.Inactive++
	}
	if d.Upper == 0 {
		return
	}
	if s.atCrossing && d.total() == d.Upper || !s.atCrossing && d.total() >= d.Upper {
		d.Overloaded = true
	}
}

// bindTemplate counts a persistence template on d: 6.1.176 checks the upper
// threshold here too (its counts unchanged); 6.1.183 on does not.
func (s *Sim) bindTemplate(d *Dest) {
	d.Persist++
	if !s.atCrossing && d.Upper != 0 && d.total() >= d.Upper {
		d.Overloaded = true
	}
}

// unbind forgets an expired connection of d (ip_vs_unbind_dest) and clears the
// overload flag: 6.1.176 whenever the count is below the lower threshold (or
// 75% of the upper one; with neither, at once); 6.1.183 on when the count
// falls below the lower threshold.
func (s *Sim) unbind(d *Dest, active bool) {
	before := d.total()
	if active {
		d.Active--
	} else {
		d.Inactive--
	}
	if s.atCrossing {
		if d.Upper != 0 && before == d.lowerVal() {
			d.Overloaded = false
		}
		return
	}
	s.clearBelow(d)
}

func (s *Sim) clearBelow(d *Dest) {
	switch {
	case d.Lower != 0:
		if d.total() < d.Lower {
			d.Overloaded = false
		}
	case d.Upper != 0:
		if d.total()*4 < d.Upper*3 {
			d.Overloaded = false
		}
	default:
		d.Overloaded = false
	}
}

// Order names the real servers in list order.
func (s *Sim) Order() []string {
	out := make([]string, len(s.Dests))
	for i, d := range s.Dests {
		out[i] = d.Name
	}
	return out
}

// Connect schedules one new connection at the model's clock and returns the
// server ("" for none), persistence aside (see Schedule). If hold, the
// connection stays established (active); otherwise it is closed before the
// next one starts (inactive, in TIME_WAIT, until it expires).
func (s *Sim) Connect(req Request, hold bool) string {
	i := s.Sched.Pick(req, s.Dests)
	if i < 0 {
		return ""
	}
	s.open(s.Dests[i], hold, nil)
	return s.Dests[i].Name
}

// Count records a connection bound to the named server without scheduling it
// (one under a persistence template the caller keeps).
func (s *Sim) Count(name string, hold bool) {
	if i := indexOf(s.Dests, name); i >= 0 {
		s.open(s.Dests[i], hold, nil)
	}
}

// Close closes one of the named server's established connections: it leaves
// ESTABLISHED and counts as inactive, in TIME_WAIT, until it expires.
func (s *Sim) Close(name string) {
	for _, c := range s.conns {
		if c.active && c.dest.Name == name {
			c.active = false
			c.dest.Active--
			c.dest.Inactive++
			c.expires, c.timeout = s.Now+timeWait, timeWait
			return
		}
	}
}

// Expire forgets one of the named server's connections at once (its timer
// ran out), active or not, as ip_vs_conn_expire does.
func (s *Sim) Expire(name string, active bool) {
	for _, c := range s.conns {
		if c.active == active && c.dest.Name == name {
			s.expireConn(c)
			return
		}
	}
	if i := indexOf(s.Dests, name); i >= 0 {
		s.unbind(s.Dests[i], active)
	}
}

// Sequence schedules n connections from req.
func (s *Sim) Sequence(req Request, n int, hold bool) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = s.Connect(req, hold)
	}
	return out
}

// rr is ip_vs_rr_schedule: walk on from the last choice, skipping servers of
// weight 0 or overloaded. It starts at the list head.
type rr struct{ last string } // "" is the list head

func indexOf(dests []*Dest, name string) int {
	return slices.IndexFunc(dests, func(d *Dest) bool { return d.Name == name })
}

// removing is ip_vs_rr_del_dest: a deleted last choice hands its place to the
// server before it (the list head for the first).
func (r *rr) removing(dests []*Dest, i int) {
	if r.last != dests[i].Name {
		return
	}
	r.last = ""
	if i > 0 {
		r.last = dests[i-1].Name
	}
}

func (r *rr) Pick(_ Request, dests []*Dest) int {
	start := -1
	if r.last != "" {
		start = indexOf(dests, r.last)
	}
	last, cur := start, start
	for pass := 0; ; {
		for i := cur + 1; i < len(dests); i++ {
			if dests[i].available() {
				r.last = dests[i].Name
				return i
			}
			if i == last {
				return -1
			}
		}
		cur = -1
		pass++
		if pass >= 2 || start == -1 {
			return -1
		}
	}
}

// wrr is ip_vs_wrr_schedule with its mark (cl, cw, mw, di), reset by
// ip_vs_wrr_dest_changed whenever a real server is added, edited or removed.
type wrr struct {
	cl         int // index in the list, -1 for the head
	cw, mw, di int
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (w *wrr) changed(dests []*Dest) {
	w.cl = -1
	g, max := 0, 0
	for _, d := range dests {
		if d.Weight > 0 {
			if g > 0 {
				g = gcd(d.Weight, g)
			} else {
				g = d.Weight
			}
		}
		if d.Weight > max {
			max = d.Weight
		}
	}
	if g == 0 {
		g = 1
	}
	w.di = g
	w.mw = max - (w.di - 1)
	if w.cw > w.mw || w.cw == 0 {
		w.cw = w.mw
	} else if w.di > 1 {
		w.cw = (w.cw/w.di)*w.di + 1
	}
}

func (w *wrr) Pick(_ Request, dests []*Dest) int {
	dest := w.cl
	if w.mw == 0 {
		return -1
	}
	last, stop := dest, -2
	lastPass, restarted := false, false
	for {
		for dest = dest + 1; dest < len(dests); dest++ {
			d := dests[dest]
			if !d.Overloaded && d.Weight >= w.cw {
				w.cl = dest
				return dest
			}
			if dest == stop {
				w.cl = dest
				return -1
			}
		}
		dest = -1
		w.cw -= w.di
		if w.cw <= 0 {
			w.cw = w.mw
			if lastPass || last == -1 {
				w.cl = dest
				return -1
			}
			restarted = true
		}
		lastPass = w.cw <= w.di
		if lastPass && restarted && last != -1 {
			stop = last
		}
	}
}

// lc is ip_vs_lc_schedule: the first server in list order with the least overhead.
type lc struct{ overhead func(*Dest) int64 }

func (l lc) Pick(_ Request, dests []*Dest) int {
	least := -1
	var loh int64
	for i, d := range dests {
		if !d.available() {
			continue
		}
		if doh := l.overhead(d); least < 0 || doh < loh {
			least, loh = i, doh
		}
	}
	return least
}

func activePlusOne(d *Dest) int64 { return int64(d.Active) + 1 }

// weighted is ip_vs_wlc_schedule (overhead = conn overhead) and
// ip_vs_sed_schedule (overhead = active + 1): the least overhead/weight, the
// first in list order on ties. Note the kernel skips weight 0 only when choosing
// the first candidate.
type weighted struct{ overhead func(*Dest) int64 }

func (w weighted) Pick(_ Request, dests []*Dest) int {
	least := -1
	for i, d := range dests {
		if d.available() {
			least = i
			break
		}
	}
	if least < 0 {
		return -1
	}
	loh := w.overhead(dests[least])
	for i := least + 1; i < len(dests); i++ {
		d := dests[i]
		if d.Overloaded {
			continue
		}
		doh := w.overhead(d)
		if loh*int64(d.Weight) > doh*int64(dests[least].Weight) {
			least, loh = i, doh
		}
	}
	return least
}

// nq is ip_vs_nq_schedule: an idle server (no active connection) at once, else
// shortest expected delay.
type nq struct{}

func (nq) Pick(_ Request, dests []*Dest) int {
	least := -1
	var loh int64
	for i, d := range dests {
		if !d.available() {
			continue
		}
		doh := activePlusOne(d)
		if d.Active == 0 {
			return i
		}
		if least < 0 || loh*int64(d.Weight) > doh*int64(dests[least].Weight) {
			least, loh = i, doh
		}
	}
	return least
}

// fo is ip_vs_fo_schedule: the first server with the highest weight.
type fo struct{}

func (fo) Pick(_ Request, dests []*Dest) int {
	h, hw := -1, 0
	for i, d := range dests {
		if !d.Overloaded && d.Weight > hw {
			h, hw = i, d.Weight
		}
	}
	return h
}

// ovf is ip_vs_ovf_schedule: the first server with the highest weight whose active
// connections do not exceed its weight.
type ovf struct{}

func (ovf) Pick(_ Request, dests []*Dest) int {
	h, hw := -1, 0
	for i, d := range dests {
		if d.Overloaded || d.Active > d.Weight || d.Weight == 0 {
			continue
		}
		if h < 0 || d.Weight > hw {
			h, hw = i, d.Weight
		}
	}
	return h
}

const hashTabBits = 8 // CONFIG_IP_VS_SH_TAB_BITS, and dh's default

// hash32 is the kernel's generic hash_32.
func hash32(val uint32, bits uint) uint32 { return (val * 0x61C88647) >> (32 - bits) }

// fold is how sh and dh reduce an address to 32 bits (host order; IPv6 XORs its
// four words in network order, then converts).
func fold(a netip.Addr) uint32 {
	if a.Is4() {
		b := a.As4()
		return binary.BigEndian.Uint32(b[:])
	}
	b := a.As16()
	var x [4]byte
	for i := range 4 {
		for j := range 4 {
			x[j] ^= b[4*i+j]
		}
	}
	return binary.BigEndian.Uint32(x[:])
}

// sh is ip_vs_sh_schedule: 256 buckets filled in list order, each server taking
// as many consecutive buckets as its weight; the client address (plus its port,
// with sh-port) picks a bucket.
type sh struct {
	port, fallback bool
	buckets        [1 << hashTabBits]int
}

func (s *sh) changed(dests []*Dest) {
	p, count := 0, 0
	for i := range s.buckets {
		if len(dests) == 0 {
			s.buckets[i] = -1
			continue
		}
		s.buckets[i] = p
		count++
		if count >= dests[p].Weight {
			p = (p + 1) % len(dests)
			count = 0
		}
	}
}

func (s *sh) hashkey(req Request, offset uint32) uint32 {
	var port uint32
	if s.port {
		port = uint32(req.SrcPort)
	}
	return (offset + hash32(port+fold(req.Src), hashTabBits)) & (1<<hashTabBits - 1)
}

func (s *sh) Pick(req Request, dests []*Dest) int {
	ihash := s.hashkey(req, 0)
	d := s.buckets[ihash]
	if d < 0 {
		return -1
	}
	if dests[d].available() {
		return d
	}
	if !s.fallback {
		return -1
	}
	for offset := uint32(0); offset < 1<<hashTabBits; offset++ {
		roffset := (offset + ihash) % (1 << hashTabBits)
		d := s.buckets[s.hashkey(req, roffset)]
		if d < 0 {
			return -1
		}
		if dests[d].available() {
			return d
		}
	}
	return -1
}

// dh is ip_vs_dh_schedule: 256 buckets filled round robin over the list; the
// destination (virtual) address picks one.
type dh struct{ buckets [1 << hashTabBits]int }

func (h *dh) changed(dests []*Dest) {
	for i := range h.buckets {
		h.buckets[i] = -1
		if len(dests) > 0 {
			h.buckets[i] = i % len(dests)
		}
	}
}

func (h *dh) Pick(req Request, dests []*Dest) int {
	d := h.buckets[hash32(fold(req.Dst), hashTabBits)]
	if d < 0 || !dests[d].available() {
		return -1
	}
	return d
}
