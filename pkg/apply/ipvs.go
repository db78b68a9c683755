package apply

import (
	"encoding/binary"
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
	FlagHashed     = 0x2  // set by the kernel on every listed service
	FlagSched1     = 0x8  // sh-fallback, mh-fallback
	FlagSched2     = 0x10 // sh-port, mh-port
	FlagSched3     = 0x20
)

// SchedFlags maps ipvsadm's scheduler flag names to service flags.
var SchedFlags = map[string]uint32{
	"sh-fallback": FlagSched1, "sh-port": FlagSched2,
	"mh-fallback": FlagSched1, "mh-port": FlagSched2,
}

// SchedFlagNames names the scheduler flags set in flags for scheduler sched.
func SchedFlagNames(sched string, flags uint32) []string {
	var out []string
	for _, n := range []string{"fallback", "port"} {
		name := sched + "-" + n
		if f, ok := SchedFlags[name]; ok && flags&f != 0 {
			out = append(out, name)
		}
	}
	return out
}

// DefaultTimeout is the persistence timeout ipvsadm uses for -p without a value.
const DefaultTimeout = 300

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

// NetmaskFromKernel decodes a netmask read back through moby/ipvs (see netmaskToKernel).
func NetmaskFromKernel(v uint32, v6 bool) int {
	if v6 {
		return int(v)
	}
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	ones, _ := net.IPMask(b[:]).Size()
	return ones
}

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
	k := &ipvs.Service{SchedName: s.Scheduler}
	if k.SchedName == "" {
		k.SchedName = DefaultScheduler
	}
	for _, f := range s.SchedFlags {
		k.Flags |= SchedFlags[f]
	}
	mask := s.Netmask
	if mask == 0 && !s.Persistent {
		mask = s.MaxNetmask()
	}
	if s.Persistent {
		k.Flags |= FlagPersistent
		k.Timeout = s.Timeout
		if k.Timeout == 0 {
			k.Timeout = DefaultTimeout
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
	k.Protocol = protocols[s.Protocol]
	k.Address = net.IP(s.Addr.Addr().AsSlice())
	k.Port = s.Addr.Port()
	return k
}

func toKernelDest(d Server) *ipvs.Destination {
	return &ipvs.Destination{
		Address:         net.IP(d.Addr.Addr().AsSlice()),
		Port:            d.Addr.Port(),
		Weight:          d.Weight,
		ConnectionFlags: methodFlags[d.Method],
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

func kernelServiceKey(k *ipvs.Service) string {
	if k.FWMark != 0 {
		if k.AddressFamily == syscall.AF_INET6 {
			return fmt.Sprintf("fwm6:%d", k.FWMark)
		}
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
		case serviceDiffers(cur, ks):
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
			case destDiffers(cur, kd):
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
