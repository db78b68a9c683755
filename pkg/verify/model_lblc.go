package verify

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The lblc and lblcr models follow net/netfilter/ipvs/ip_vs_lblc.c and
// ip_vs_lblcr.c. Line numbers are those of Debian's linux-source 6.1.192. Two
// changes reached these schedulers between 6.1.176 (the sandbox's release) and
// 6.1.192 (Debian's changelog): "ipvs: add totalconns for dest" (6.1.183) made
// ip_vs_dest_conn_overhead, which both use to find the least loaded server,
// activeconns*256 + totalconns instead of + inactconns (Kernel.TotalConnsOverhead
// decides); "ipvs: separate destination availability state" (6.1.184) moved
// the "server is available" bit from dest->flags (IP_VS_DEST_F_AVAILABLE) to
// dest->cflags (IP_VS_DEST_CF_AVAILABLE) at ip_vs_lblc.c line 510 and
// ip_vs_lblcr.c lines 174 and 191, with the same meaning: the server is in the
// service (not deleted). Nothing else in the two files differs.
//
// What the models leave out, all of it time-based and none of it reached within
// a run of minutes:
//   - entries expire only when unused for net.ipv4.vs.lblc_expiration /
//     lblcr_expiration (DEFAULT_EXPIRATION, 24 hours), checked by a full sweep
//     every COUNT_FOR_FULL_EXPIRATION (30) runs of the 60-second timer
//     (ip_vs_lblc.c lines 59-70, 260-344; ip_vs_lblcr.c lines 59-70, 424-507);
//   - entries unused for ENTRY_TIMEOUT (6 minutes) are collected only while the
//     table holds more than 16384 of them (IP_VS_LBLC_TAB_SIZE*16), and no new
//     entry is made past 24576 (lblc line 210, lblcr line 368): a run of
//     lvslab uses one entry per destination address, a handful;
//   - lblcr drops the most loaded server of a set of more than one once the set
//     has not changed for lblcr_expiration (24 hours; ip_vs_lblcr.c lines
//     665-678, ip_vs_dest_set_max).
// A scenario that sets those sysctls to seconds is outside the models.

// newLBLC returns the lblc or lblcr model for kernel k: both weigh servers by
// the connection overhead, which k's release decides.
func newLBLC(k Kernel, name lab.Scheduler) (Scheduler, error) {
	total, known := k.TotalConnsOverhead()
	if !known {
		return nil, fmt.Errorf("kernel %s: lvslab does not know whether its %s counts inactive or total connections (6.1 changed it in 6.1.183)", k, name)
	}
	least := weighted{overhead: connOverhead(total)}
	if name == lab.LBLCR {
		return &lblcr{least: least, sets: map[netip.Addr][]string{}}, nil
	}
	return &lblc{least: least, cache: map[netip.Addr]string{}}, nil
}

// isOverloaded is is_overloaded (ip_vs_lblc.c lines 464-478, the same in
// ip_vs_lblcr.c lines 627-641): the server holds more active connections than
// its weight and some server of the service holds fewer active connections
// than half its own weight (so one with a weight; neither that server's
// overload flag nor anything else is looked at). It is not the overload flag
// of the upper threshold (Dest.Overloaded).
func isOverloaded(d *Dest, dests []*Dest) bool {
	if d.Active <= d.Weight {
		return false
	}
	return slices.ContainsFunc(dests, func(o *Dest) bool { return o.Active*2 < o.Weight })
}

// lblc is ip_vs_lblc_schedule (ip_vs_lblc.c lines 484-534), locality-based
// least connections: a cache from the packet's destination address to a
// server. A destination keeps its server while that server is in the service,
// has a weight, and is not overloaded in is_overloaded's sense (the upper
// threshold's overload flag is not looked at there); otherwise the least
// loaded server by wlc's rule (__ip_vs_lblc_schedule, lines 403-457, which is
// ip_vs_wlc_schedule's loop) is chosen and replaces the cached one
// (ip_vs_lblc_new, lines 197-227).
type lblc struct {
	least weighted
	cache map[netip.Addr]string // destination address -> server
}

func (l *lblc) Pick(req Request, dests []*Dest) int {
	if name, ok := l.cache[req.Dst]; ok {
		// A server no longer in the list was deleted: it is not available
		// (line 510) and the destination is scheduled afresh.
		if i := indexOf(dests, name); i >= 0 && dests[i].Weight > 0 && !isOverloaded(dests[i], dests) {
			return i
		}
	}
	i := l.least.Pick(req, dests)
	if i < 0 {
		return -1
	}
	l.cache[req.Dst] = dests[i].Name
	return i
}

// lblcr is ip_vs_lblcr_schedule (ip_vs_lblcr.c lines 647-718), locality-based
// least connections with replication: a cache from the packet's destination
// address to a set of servers. The set's least loaded available server
// (ip_vs_dest_set_min, lines 160-206) serves while it is not overloaded in
// is_overloaded's sense; otherwise the least loaded server of the whole
// service (__ip_vs_lblcr_schedule, lines 565-620, wlc's loop) serves and joins
// the set, at its head (ip_vs_dest_set_insert, lines 99-122), unless it is in
// it already. A new destination starts a set of one (ip_vs_lblcr_new, lines
// 360-392).
type lblcr struct {
	least weighted
	sets  map[netip.Addr][]string // destination address -> server set, last added first
}

func (l *lblcr) Pick(req Request, dests []*Dest) int {
	set, ok := l.sets[req.Dst]
	if ok {
		if i := l.setMin(set, dests); i >= 0 && !isOverloaded(dests[i], dests) {
			return i
		}
	}
	i := l.least.Pick(req, dests)
	if i < 0 {
		return -1
	}
	if name := dests[i].Name; !slices.Contains(set, name) {
		l.sets[req.Dst] = append([]string{name}, set...)
	}
	return i
}

// setMin is ip_vs_dest_set_min: in the set's order, the first server not over
// its upper threshold, with a weight, still in the service; then any later one
// (not over its threshold, still in the service) whose overhead/weight is
// strictly less. The index is in dests, or -1.
func (l *lblcr) setMin(set []string, dests []*Dest) int {
	least := -1
	var loh int64
	for _, name := range set {
		i := indexOf(dests, name)
		if i < 0 || dests[i].Overloaded {
			continue // deleted (not available), or over its upper threshold
		}
		d := dests[i]
		if least < 0 {
			if d.Weight > 0 {
				least, loh = i, l.least.overhead(d)
			}
			continue
		}
		if doh := l.least.overhead(d); loh*int64(d.Weight) > doh*int64(dests[least].Weight) {
			least, loh = i, doh
		}
	}
	return least
}
