package verify

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The mh model follows net/netfilter/ipvs/ip_vs_mh.c. Line numbers are those of
// Debian's linux-source 6.1.192; the file is the same in 6.1.176, the sandbox's
// release: of the IPVS changes between the two (Debian's changelog up to
// 6.1.187: "ipvs: add totalconns for dest", "ipvs: properly update the overload
// flag on dest edit", "ipvs: separate destination availability state"), none
// changes what mh computes: it reads neither the connection counts nor the
// availability flag, and tests the overload flag as before (line 84).

const (
	// mhTabSize is IP_VS_MH_TAB_SIZE, primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]
	// (lines 49-59): 4093 with the default index 12, which Debian's config
	// (and the sandbox's, /usr/share/doc/user-mode-linux/config.gz) keeps.
	mhTabSize = 4093
	// mhTabBits is IP_VS_MH_TAB_BITS, CONFIG_IP_VS_MH_TAB_INDEX / 2 (line 57):
	// weights whose quotient by their gcd needs more bits are shifted down.
	mhTabBits = 6
	// mhKey1 and mhKey2 are the fixed keys of generate_hash_secret (lines
	// 70-78): each hsiphash_key_t holds the same unsigned long twice. hash1
	// places a server's first slot and a client in the table; hash2 gives a
	// server's skip.
	mhKey1 = 2654435761
	mhKey2 = 2654446892
)

// mhHashkey is ip_vs_mh_hashkey (lines 87-102): the address folded to 32 bits
// in host order (IPv6: the XOR of its four 32-bit words, taken in network order,
// then converted, as sh and dh fold it), plus the port in host order, plus
// offset, as a host-order (little-endian on x86) unsigned int, hashed with
// hsiphash under key.
func mhHashkey(a netip.Addr, port uint16, key uint64, offset uint32) uint32 {
	var v [4]byte
	binary.LittleEndian.PutUint32(v[:], offset+uint32(port)+fold(a.Unmap()))
	return hsiphash(key, key, v[:])
}

// mh is ip_vs_mh_schedule (lines 472-508), Maglev hashing: a table of 4093
// slots, filled from each real server's permutation of the slots (its address
// and port give its first slot and its skip), each server taking as many slots
// in turn as its reduced weight; a client's address (and, with mh-port, its
// source port) picks a slot. With mh-fallback an unavailable server (weight 0
// or overloaded) makes the client walk on through rehashed slots
// (ip_vs_mh_get_fallback); without it the client gets no server.
//
// The table hashes where each real server is, so servers must be added with
// Sim.AddServer; a model given a server without its address predicts nothing
// (every Pick is -1) rather than guess.
type mh struct {
	port, fallback bool
	addrs          map[string]netip.AddrPort // where each real server is (Sim.AddServer)
	last           map[string]int            // each real server's last_weight
	lookup         [mhTabSize]string         // the server each slot holds; "" for none
	blind          bool                      // a server's address is unknown: no table
}

func newMH(flags []lab.SchedFlag) *mh {
	return &mh{
		port:     slices.Contains(flags, lab.MHPort),
		fallback: slices.Contains(flags, lab.MHFallback),
		addrs:    map[string]netip.AddrPort{},
		last:     map[string]int{},
	}
}

func (m *mh) place(name string, addr netip.AddrPort) { m.addrs[name] = addr }

// changed is ip_vs_mh_dest_changed (lines 431-441), which the kernel calls when
// a real server is added, edited or removed: the table is rebuilt from each
// server's last_weight, the latest weight it had that was not 0
// (net/netfilter/ipvs/ip_vs_ctl.c, __ip_vs_update_dest, lines 919-921: set on
// add, even to 0, and on every edit to a weight other than 0). So quiescing a
// server (weight 0) keeps its slots, and its clients find it unavailable,
// while a server added with weight 0 takes no slot at all.
func (m *mh) changed(dests []*Dest) {
	present := make(map[string]bool, len(dests))
	for _, d := range dests {
		present[d.Name] = true
		if _, ok := m.last[d.Name]; !ok || d.Weight != 0 {
			m.last[d.Name] = d.Weight
		}
	}
	for name := range m.last {
		if !present[name] {
			delete(m.last, name) // removed: added again, it starts afresh
		}
	}
	m.lookup = [mhTabSize]string{}
	m.blind = false

	// ip_vs_mh_gcd_weight and ip_vs_mh_shift_weight (lines 322-370).
	g, most := 0, 0
	for _, d := range dests {
		w := m.last[d.Name]
		if w > 0 {
			if g > 0 {
				g = gcd(w, g)
			} else {
				g = w
			}
		}
		most = max(most, w)
	}
	if g < 1 {
		return // no server with a weight: ip_vs_mh_populate resets the table
	}
	rshift := max(bits.Len(uint(most/g))-mhTabBits, 0)

	// ip_vs_mh_permutate (lines 122-157), in list order.
	type setup struct {
		name               string
		offset, skip, perm uint32
		turns              int
	}
	ds := make([]setup, len(dests))
	for i, d := range dests {
		a, ok := m.addrs[d.Name]
		if !ok {
			m.blind = true
			return
		}
		s := &ds[i]
		s.name = d.Name
		s.offset = mhHashkey(a.Addr(), a.Port(), mhKey1, 0) % mhTabSize
		s.skip = mhHashkey(a.Addr(), a.Port(), mhKey2, 0)%(mhTabSize-1) + 1
		s.perm = s.offset
		lw := m.last[d.Name]
		if s.turns = (lw / g) >> rshift; s.turns == 0 && lw != 0 {
			s.turns = 1
		}
	}

	// ip_vs_mh_populate (lines 159-231): round after round over the list, each
	// server with turns takes that many slots in a row, each the next free one
	// of its permutation, until every slot is taken.
	var taken [mhTabSize]bool
	n, count := 0, 0
	for {
		for i := 0; i < len(ds); {
			s := &ds[i]
			if s.turns < 1 {
				i++
				continue
			}
			c := s.perm
			for taken[c] {
				if s.perm += s.skip; s.perm >= mhTabSize {
					s.perm -= mhTabSize
				}
				c = s.perm
			}
			taken[c] = true
			m.lookup[c] = s.name
			if n++; n == mhTabSize {
				return
			}
			if count++; count >= s.turns {
				count = 0
				i++
			}
		}
	}
}

// at is the server in slot (its index in dests), or -1 for an empty slot.
func (m *mh) at(slot uint32, dests []*Dest) int {
	if m.lookup[slot] == "" {
		return -1
	}
	return indexOf(dests, m.lookup[slot])
}

// Pick is ip_vs_mh_get (lines 233-243) or, with mh-fallback,
// ip_vs_mh_get_fallback (lines 245-285). The kernel hashes the packet's source
// address (the destination only for a packet seen in reverse, which a new
// connection never is) and, with mh-port, its source port
// (ip_vs_mh_get_port, lines 443-470; 0 without the flag).
func (m *mh) Pick(req Request, dests []*Dest) int {
	if m.blind {
		return -1
	}
	var port uint16
	if m.port {
		port = req.SrcPort
	}
	ihash := mhHashkey(req.Src, port, mhKey1, 0) % mhTabSize
	i := m.at(ihash, dests)
	if i < 0 {
		return -1
	}
	if dests[i].available() { // is_unavailable (lines 80-85): weight <= 0 or overloaded
		return i
	}
	if !m.fallback {
		return -1
	}
	for offset := range uint32(mhTabSize) {
		roffset := (offset + ihash) % mhTabSize
		i := m.at(mhHashkey(req.Src, port, mhKey1, roffset)%mhTabSize, dests)
		if i < 0 {
			return -1
		}
		if dests[i].available() {
			return i
		}
	}
	return -1
}

// placer is implemented by scheduler models that hash where each real server
// is (mh permutes its table by each server's address and port).
type placer interface {
	place(name string, addr netip.AddrPort)
}

// AddServer adds a real server at addr as AddDest does, first telling a
// scheduler model that hashes real servers' addresses (mh) where it is. Build
// every model this way when the addresses are known: for the others it is
// AddDest.
func (s *Sim) AddServer(name string, addr netip.AddrPort, weight int) {
	s.AddServerThresholds(name, addr, weight, 0, 0)
}

// AddServerThresholds is AddServer with connection thresholds (-x, -y).
func (s *Sim) AddServerThresholds(name string, addr netip.AddrPort, weight, upper, lower int) {
	if p, ok := s.Sched.(placer); ok {
		p.place(name, addr)
	}
	s.AddDestThresholds(name, weight, upper, lower)
}
