package apply

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"syscall"

	"github.com/lvslab/lvslab/pkg/lab"
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
	FlagHashed     = 0x2  // set by the kernel on every listed service
	FlagSched1     = 0x8  // sh-fallback, mh-fallback
	FlagSched2     = 0x10 // sh-port, mh-port
)

// schedFlagBit is a scheduler flag's bit in the service flags.
func schedFlagBit(f lab.SchedFlag) uint32 {
	if f.Fallback() {
		return FlagSched1
	}
	return FlagSched2
}

// schedFlagsOf names the scheduler flags set in flags for scheduler s.
func schedFlagsOf(s lab.Scheduler, flags uint32) []lab.SchedFlag {
	var out []lab.SchedFlag
	for _, f := range s.Flags() {
		if flags&schedFlagBit(f) != 0 {
			out = append(out, f)
		}
	}
	slices.Sort(out)
	return out
}

// netmaskToKernel encodes an IPv4 persistence netmask for moby/ipvs. The kernel
// reads the attribute as big-endian, but moby/ipvs writes the uint32 in host byte
// order: so the value given must be the mask's bytes read in host order (a /24 is
// 0x00FFFFFF on x86). For IPv6 the kernel wants the prefix length.
func netmaskToKernel(bits int, v6 bool) uint32 {
	if v6 {
		return uint32(bits)
	}
	m := net.CIDRMask(bits, 32)
	return binary.NativeEndian.Uint32(m)
}

// netmaskFromKernel decodes a netmask read back through moby/ipvs (see netmaskToKernel).
func netmaskFromKernel(v uint32, v6 bool) int {
	if v6 {
		return int(v)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	ones, _ := net.IPMask(b[:]).Size()
	return ones
}

func methodFlag(m lab.Method) uint32 {
	switch m {
	case lab.NAT:
		return ipvs.ConnectionFlagMasq
	case lab.Tunnel:
		return ipvs.ConnectionFlagTunnel
	case lab.Local:
		return ipvs.ConnectionFlagLocalNode
	}
	return ipvs.ConnectionFlagDirectRoute
}

// methodOf names the forwarding method in a destination's connection flags.
func methodOf(flags uint32) lab.Method {
	switch flags & ipvs.ConnectionFlagFwdMask {
	case ipvs.ConnectionFlagMasq:
		return lab.NAT
	case ipvs.ConnectionFlagTunnel:
		return lab.Tunnel
	case ipvs.ConnectionFlagLocalNode:
		return lab.Local
	case ipvs.ConnectionFlagDirectRoute:
		return lab.DR
	}
	return lab.Method(fmt.Sprintf("fwd(%d)", flags&ipvs.ConnectionFlagFwdMask))
}

func family(a netip.Addr) uint16 {
	if a.Is4() {
		return syscall.AF_INET
	}
	return syscall.AF_INET6
}

func toKernelService(s lab.Service) *ipvs.Service {
	k := &ipvs.Service{SchedName: string(s.Scheduler)}
	if k.SchedName == "" {
		k.SchedName = string(lab.DefaultScheduler)
	}
	for _, f := range s.SchedFlags {
		k.Flags |= schedFlagBit(f)
	}
	mask := s.Netmask
	if mask == 0 && !s.Persistent {
		mask = s.MaxNetmask()
	}
	if s.Persistent {
		k.Flags |= FlagPersistent
		k.Timeout = s.Timeout
		if k.Timeout == 0 {
			k.Timeout = lab.DefaultTimeout
		}
	}
	k.Netmask = netmaskToKernel(mask, s.Is6())
	k.AddressFamily = syscall.AF_INET
	if s.Is6() {
		k.AddressFamily = syscall.AF_INET6
	}
	if s.FWMark != 0 {
		k.FWMark = s.FWMark
		return k
	}
	k.Protocol = s.Protocol.Number()
	k.Address = net.IP(s.Addr.Addr().AsSlice())
	k.Port = s.Addr.Port()
	return k
}

// fromKernelService is the typed form of a service the kernel listed, without
// its real servers.
func fromKernelService(k *ipvs.Service) lab.Service {
	v6 := k.AddressFamily == syscall.AF_INET6
	sched := lab.Scheduler(k.SchedName)
	s := lab.Service{
		FWMark:     k.FWMark,
		Scheduler:  sched,
		SchedFlags: schedFlagsOf(sched, k.Flags),
		Persistent: k.Flags&FlagPersistent != 0,
		Netmask:    netmaskFromKernel(k.Netmask, v6),
	}
	if s.Persistent {
		s.Timeout = k.Timeout
	}
	if k.FWMark != 0 {
		s.IPv6 = v6
		return s
	}
	s.Protocol, _ = lab.ProtocolFromNumber(k.Protocol)
	a, _ := netip.AddrFromSlice(k.Address)
	s.Addr = netip.AddrPortFrom(a.Unmap(), k.Port)
	return s
}

func fromKernelDest(d *ipvs.Destination) lab.Server {
	a, _ := netip.AddrFromSlice(d.Address)
	return lab.Server{
		Addr:   netip.AddrPortFrom(a.Unmap(), d.Port),
		Method: methodOf(d.ConnectionFlags),
		Weight: d.Weight,
		Upper:  d.UpperThreshold,
		Lower:  d.LowerThreshold,
	}
}

func toKernelDest(d lab.Server) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         net.IP(d.Addr.Addr().AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: methodFlag(d.Method),
		AddressFamily:   family(d.Addr.Addr()),
		UpperThreshold:  d.Upper,
		LowerThreshold:  d.Lower,
	}
}

func serviceDiffers(cur, want *ipvs.Service) bool {
	return cur.SchedName != want.SchedName || cur.Flags&^FlagHashed != want.Flags ||
		cur.Timeout != want.Timeout || cur.Netmask != want.Netmask
}

func destDiffers(cur, want *ipvs.Destination) bool {
	return cur.Weight != want.Weight || cur.ConnectionFlags&ipvs.ConnectionFlagFwdMask != want.ConnectionFlags ||
		cur.UpperThreshold != want.UpperThreshold || cur.LowerThreshold != want.LowerThreshold
}

func kernelServiceKey(k *ipvs.Service) string { return fromKernelService(k).Key() }

func kernelDestKey(d *ipvs.Destination) string { return fromKernelDest(d).Addr.String() }

// DiffIPVS plans the writes that bring the IPVS table behind h to exactly
// want: services and real servers missing are added, those that differ are
// edited in place, and those not wanted are deleted.
func DiffIPVS(nodeName string, h IPVS, want []lab.Service) ([]Change, error) {
	var out []Change
	change := func(res Resource, obj string, act Action, detail string, exec func(IPVS) error) {
		out = append(out, Change{Node: nodeName, Resource: res, Object: obj, Action: act, Detail: detail,
			exec: func(s *session) error {
				h, err := s.ipvsHandle()
				if err != nil {
					return err
				}
				return exec(h)
			}})
	}
	have, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("list IPVS services: %w", err)
	}
	haveByKey := map[string]*ipvs.Service{}
	for _, k := range have {
		haveByKey[kernelServiceKey(k)] = k
	}
	wantKeys := map[string]bool{}
	for _, svc := range want {
		key := svc.Key()
		wantKeys[key] = true
		ks := toKernelService(svc)
		cur, ok := haveByKey[key]
		switch {
		case !ok:
			change(Services, key, Add, "scheduler "+ks.SchedName, func(h IPVS) error { return h.NewService(ks) })
		case serviceDiffers(cur, ks):
			change(Services, key, Edit, "scheduler "+ks.SchedName, func(h IPVS) error { return h.UpdateService(ks) })
		}
		var haveDests []*ipvs.Destination
		if ok {
			if haveDests, err = h.GetDestinations(cur); err != nil {
				return nil, fmt.Errorf("list real servers of %s: %w", key, err)
			}
		}
		destByKey := map[string]*ipvs.Destination{}
		for _, d := range haveDests {
			destByKey[kernelDestKey(d)] = d
		}
		wantDest := map[string]bool{}
		for _, srv := range svc.Servers {
			kd := toKernelDest(srv)
			dk := kernelDestKey(kd)
			wantDest[dk] = true
			detail := fmt.Sprintf("%s, weight %d", srv.Method, srv.Weight)
			cur, ok := destByKey[dk]
			switch {
			case !ok:
				change(Servers, dk+" of "+key, Add, detail, func(h IPVS) error { return h.NewDestination(ks, kd) })
			case destDiffers(cur, kd):
				change(Servers, dk+" of "+key, Edit, detail, func(h IPVS) error { return h.UpdateDestination(ks, kd) })
			}
		}
		for _, dk := range sortedKeys(destByKey) {
			if !wantDest[dk] {
				d := destByKey[dk]
				change(Servers, dk+" of "+key, Delete, "", func(h IPVS) error { return h.DelDestination(ks, d) })
			}
		}
	}
	for _, key := range sortedKeys(haveByKey) {
		if !wantKeys[key] {
			k := haveByKey[key]
			change(Services, key, Delete, "", func(h IPVS) error { return h.DelService(k) })
		}
	}
	return out, nil
}

// ReconcileIPVS plans with DiffIPVS and makes the writes through h.
func ReconcileIPVS(nodeName string, h IPVS, want []lab.Service) ([]Change, error) {
	changes, err := DiffIPVS(nodeName, h, want)
	if err != nil {
		return nil, err
	}
	s := &session{ipvs: h}
	for _, c := range changes {
		if err := c.exec(s); err != nil {
			return changes, fmt.Errorf("%s: %w", c, err)
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

// RecreateService deletes the service want names and adds it again as want
// declares it, its real servers in want's order: its scheduler starts from its
// initial state (rr's and wrr's position, lblc's and lblcr's cache). Real
// servers that connections still use come back from the kernel's trash with
// their connection counts, and persistence templates keep pointing at them.
func RecreateService(h IPVS, want lab.Service) error {
	k := toKernelService(want)
	if err := h.DelService(k); err != nil {
		return fmt.Errorf("re-create %s: delete: %w", want.Key(), err)
	}
	if err := h.NewService(k); err != nil {
		return fmt.Errorf("re-create %s: add: %w", want.Key(), err)
	}
	for _, d := range want.Servers {
		if err := h.NewDestination(k, toKernelDest(d)); err != nil {
			return fmt.Errorf("re-create %s: add real server %s: %w", want.Key(), d.Addr, err)
		}
	}
	return nil
}
