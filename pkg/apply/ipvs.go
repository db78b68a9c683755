package apply

import (
	"fmt"
	"net"
	"net/netip"
	"sort"
	"syscall"

	"github.com/moby/ipvs"
)

// IPVS is the part of an IPVS netlink handle that apply uses; *ipvs.Handle
// satisfies it, and unit tests use a fake.
type IPVS interface {
	GetServices() ([]*ipvs.Service, error)
	NewService(*ipvs.Service) error
	UpdateService(*ipvs.Service) error
	DelService(*ipvs.Service) error
	GetDestinations(*ipvs.Service) ([]*ipvs.Destination, error)
	NewDestination(*ipvs.Service, *ipvs.Destination) error
	UpdateDestination(*ipvs.Service, *ipvs.Destination) error
	DelDestination(*ipvs.Service, *ipvs.Destination) error
}

// Service flags the kernel uses; moby/ipvs has no constants for them.
const (
	FlagPersistent = 0x1
	FlagHashed     = 0x2 // set by the kernel on every listed service
)

// DefaultScheduler is what the kernel (and ipvsadm) use when none is given.
const DefaultScheduler = "wlc"

var methodFlags = map[string]uint32{
	MethodNAT:    ipvs.ConnectionFlagMasq,
	MethodDR:     ipvs.ConnectionFlagDirectRoute,
	MethodTunnel: ipvs.ConnectionFlagTunnel,
}

// MethodOf names the forwarding method in a destination's connection flags.
func MethodOf(flags uint32) string {
	for m, f := range methodFlags {
		if flags&ipvs.ConnectionFlagFwdMask == f {
			return m
		}
	}
	if flags&ipvs.ConnectionFlagFwdMask == ipvs.ConnectionFlagLocalNode {
		return "local"
	}
	return fmt.Sprintf("fwd(%d)", flags&ipvs.ConnectionFlagFwdMask)
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return syscall.AF_INET
	}
	return syscall.AF_INET6
}

var protocols = map[string]uint16{"tcp": syscall.IPPROTO_TCP, "udp": syscall.IPPROTO_UDP}

// ProtocolName names an IP protocol number.
func ProtocolName(p uint16) string {
	for n, v := range protocols {
		if v == p {
			return n
		}
	}
	return fmt.Sprintf("proto(%d)", p)
}

func toKernelService(s Service) *ipvs.Service {
	k := &ipvs.Service{SchedName: s.Scheduler, Netmask: 0xFFFFFFFF}
	if k.SchedName == "" {
		k.SchedName = DefaultScheduler
	}
	if s.FWMark != 0 {
		k.FWMark = s.FWMark
		k.AddressFamily = syscall.AF_INET
		return k
	}
	k.AddressFamily = family(s.Addr.Addr())
	k.Protocol = protocols[s.Protocol]
	k.Address = net.IP(s.Addr.Addr().AsSlice())
	k.Port = s.Addr.Port()
	if s.Addr.Addr().Is6() {
		k.Netmask = 128
	}
	return k
}

func toKernelDest(d Server) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         net.IP(d.Addr.Addr().AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: methodFlags[d.Method],
		AddressFamily:   family(d.Addr.Addr()),
	}
}

func kernelServiceKey(k *ipvs.Service) string {
	if k.FWMark != 0 {
		return fmt.Sprintf("fwm:%d", k.FWMark)
	}
	a, _ := netip.AddrFromSlice(k.Address)
	return ProtocolName(k.Protocol) + ":" + netip.AddrPortFrom(a.Unmap(), k.Port).String()
}

func kernelDestKey(d *ipvs.Destination) string {
	a, _ := netip.AddrFromSlice(d.Address)
	return netip.AddrPortFrom(a.Unmap(), d.Port).String()
}

// Change is one write apply made (or, in a dry run, would make) to the kernel.
type Change struct {
	Node, What string
}

func (c Change) String() string { return c.Node + ": " + c.What }

// ReconcileIPVS brings the IPVS table behind h to exactly want: services and real
// servers missing are added, those that differ are edited in place, and those not
// wanted are deleted. It returns the writes it made.
func ReconcileIPVS(nodeName string, h IPVS, want []Service) ([]Change, error) {
	var changes []Change
	note := func(f string, a ...any) { changes = append(changes, Change{nodeName, fmt.Sprintf(f, a...)}) }
	fail := func(err error, f string, a ...any) ([]Change, error) {
		return changes, fmt.Errorf("%s: %s: %w", nodeName, fmt.Sprintf(f, a...), err)
	}
	have, err := h.GetServices()
	if err != nil {
		return fail(err, "list IPVS services")
	}
	haveByKey := map[string]*ipvs.Service{}
	for _, k := range have {
		haveByKey[kernelServiceKey(k)] = k
	}
	wantKeys := map[string]bool{}
	for _, s := range want {
		key := s.Key()
		wantKeys[key] = true
		ks := toKernelService(s)
		cur, ok := haveByKey[key]
		switch {
		case !ok:
			if err := h.NewService(ks); err != nil {
				return fail(err, "add service %s", key)
			}
			note("add service %s scheduler %s", key, ks.SchedName)
		case cur.SchedName != ks.SchedName || cur.Flags&^FlagHashed != ks.Flags:
			if err := h.UpdateService(ks); err != nil {
				return fail(err, "edit service %s", key)
			}
			note("edit service %s scheduler %s", key, ks.SchedName)
		}
		var haveDests []*ipvs.Destination
		if ok {
			if haveDests, err = h.GetDestinations(cur); err != nil {
				return fail(err, "list real servers of %s", key)
			}
		}
		destByKey := map[string]*ipvs.Destination{}
		for _, d := range haveDests {
			destByKey[kernelDestKey(d)] = d
		}
		wantDest := map[string]bool{}
		for _, srv := range s.Servers {
			kd := toKernelDest(srv)
			dk := kernelDestKey(kd)
			wantDest[dk] = true
			cur, ok := destByKey[dk]
			switch {
			case !ok:
				if err := h.NewDestination(ks, kd); err != nil {
					return fail(err, "add real server %s to %s", dk, key)
				}
				note("add real server %s to %s (%s, weight %d)", dk, key, srv.Method, srv.Weight)
			case cur.Weight != kd.Weight || cur.ConnectionFlags&ipvs.ConnectionFlagFwdMask != kd.ConnectionFlags:
				if err := h.UpdateDestination(ks, kd); err != nil {
					return fail(err, "edit real server %s of %s", dk, key)
				}
				note("edit real server %s of %s (%s, weight %d)", dk, key, srv.Method, srv.Weight)
			}
		}
		for _, dk := range sortedKeys(destByKey) {
			if !wantDest[dk] {
				if err := h.DelDestination(ks, destByKey[dk]); err != nil {
					return fail(err, "delete real server %s of %s", dk, key)
				}
				note("delete real server %s of %s", dk, key)
			}
		}
	}
	for _, key := range sortedKeys(haveByKey) {
		if !wantKeys[key] {
			if err := h.DelService(haveByKey[key]); err != nil {
				return fail(err, "delete service %s", key)
			}
			note("delete service %s", key)
		}
	}
	return changes, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
