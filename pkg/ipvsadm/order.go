package ipvsadm

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The order ipvsadm lists in: it sorts what the kernel gives it (libipvs's
// ipvs_cmp_services and ipvs_cmp_dests, as qsort comparators). Services by
// firewall mark, address family, protocol, address, port; real servers by
// address, port. Addresses compare as ipvsadm does: the difference of 32-bit
// words in host order, taken as a signed int, so that addresses more than 2^31
// apart compare the other way round. The kernel's own list order, which the
// schedulers walk, is another: lab.Table keeps that one.

// cmpWords is ipvsadm's address comparison: word by word, each difference
// taken as a signed 32-bit int.
func cmpWords(a, b netip.Addr) int {
	wa, wb := words(a), words(b)
	for i := range wa {
		if r := int32(wa[i] - wb[i]); r != 0 {
			return int(r)
		}
	}
	return 0
}

func words(a netip.Addr) []uint32 {
	if a.Is4() {
		b := a.As4()
		return []uint32{binary.BigEndian.Uint32(b[:])}
	}
	b := a.As16()
	return []uint32{binary.BigEndian.Uint32(b[0:]), binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])}
}

func family(s lab.Service) int {
	if s.Is6() {
		return 10 // AF_INET6
	}
	return 2 // AF_INET
}

func cmpServices(a, b lab.Service) int {
	if r := int32(a.FWMark - b.FWMark); r != 0 {
		return int(r)
	}
	if r := family(a) - family(b); r != 0 {
		return r
	}
	if r := int(a.Protocol.Number()) - int(b.Protocol.Number()); r != 0 {
		return r
	}
	if a.FWMark == 0 {
		if r := cmpWords(a.Addr.Addr(), b.Addr.Addr()); r != 0 {
			return r
		}
	}
	return int(a.Addr.Port()) - int(b.Addr.Port())
}

func cmpServers(a, b lab.Server) int {
	if r := cmpWords(a.Addr.Addr(), b.Addr.Addr()); r != 0 {
		return r
	}
	return int(a.Addr.Port()) - int(b.Addr.Port())
}

// Sorted returns a copy of t in the order ipvsadm lists it.
func Sorted(t *lab.Table) *lab.Table {
	out := &lab.Table{Header: t.Header}
	for _, s := range t.Services {
		type row struct {
			srv   lab.Server
			conns lab.ServerConns
		}
		rows := make([]row, len(s.Servers))
		for i := range s.Servers {
			rows[i].srv = s.Servers[i]
			if i < len(s.Conns) {
				rows[i].conns = s.Conns[i]
			}
		}
		slices.SortStableFunc(rows, func(a, b row) int { return cmpServers(a.srv, b.srv) })
		c := s
		c.Servers, c.Conns = make([]lab.Server, len(rows)), make([]lab.ServerConns, len(rows))
		for i, r := range rows {
			c.Servers[i], c.Conns[i] = r.srv, r.conns
		}
		out.Services = append(out.Services, c)
	}
	slices.SortStableFunc(out.Services, func(a, b lab.TableService) int { return cmpServices(a.Service, b.Service) })
	return out
}
