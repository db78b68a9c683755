package verify

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ARP is one ARP packet seen on the wire.
type ARP struct {
	Op        uint16 // 1 request, 2 reply
	SenderMAC net.HardwareAddr
	SenderIP  netip.Addr
	TargetIP  netip.Addr
}

func (a ARP) String() string {
	if a.Op == 1 {
		return fmt.Sprintf("who-has %s tell %s (%s)", a.TargetIP, a.SenderIP, a.SenderMAC)
	}
	return fmt.Sprintf("%s is-at %s", a.SenderIP, a.SenderMAC)
}

// ARPSocket is a raw ARP socket on one interface of a node (AF_PACKET, opened
// inside the node's namespace, to which it stays bound).
type ARPSocket struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
	ip      netip.Addr
}

const ethPARP = 0x0806

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenARP opens a raw ARP socket on dev in n.
func OpenARP(n node.Node, dev string) (*ARPSocket, error) {
	s := &ARPSocket{fd: -1}
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		s.ifindex, s.mac = ifc.Index, ifc.HardwareAddr
		addrs, err := ifc.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				s.ip = p.Addr()
				break
			}
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(ethPARP)))
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: s.ifindex})
	})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("%s: ARP socket on %s: %w", n.Name, dev, err)
	}
	return s, nil
}

// Close closes the socket.
func (s *ARPSocket) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// Request broadcasts "who-has target tell <this interface's address>".
func (s *ARPSocket) Request(target netip.Addr) error {
	if !s.ip.IsValid() {
		return errors.New("the interface has no IPv4 address to ask from")
	}
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], s.mac)
	binary.BigEndian.PutUint16(f[12:], ethPARP)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:28], s.mac)
	sip, tip := s.ip.As4(), target.As4()
	copy(f[28:32], sip[:])
	copy(f[38:42], tip[:])
	return unix.Sendto(s.fd, f, 0, &unix.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: s.ifindex, Halen: 6,
		Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}})
}

// Collect reads ARP packets for window (or until ctx ends) and returns those
// match accepts, in arrival order.
func (s *ARPSocket) Collect(ctx context.Context, window time.Duration, match func(ARP) bool) ([]ARP, error) {
	var out []ARP
	err := s.collect(ctx, time.Now().Add(window), func(a ARP, _ time.Time) bool {
		if match == nil || match(a) {
			out = append(out, a)
		}
		return false
	})
	return out, err
}

// collect reads ARP packets until deadline, ctx's end, or seen returning true,
// and gives seen each packet with the time it was read.
func (s *ARPSocket) collect(ctx context.Context, deadline time.Time, seen func(ARP, time.Time) bool) error {
	buf := make([]byte, 1500)
	for {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			return nil
		}
		tv := unix.NsecToTimeval(min(left, 50*time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if a, ok := parseARP(buf[:n]); ok && seen(a, time.Now()) {
			return nil
		}
	}
}

func parseARP(f []byte) (ARP, bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != ethPARP || f[18] != 6 || f[19] != 4 {
		return ARP{}, false
	}
	return ARP{
		Op:        binary.BigEndian.Uint16(f[20:]),
		SenderMAC: net.HardwareAddr(append([]byte(nil), f[22:28]...)),
		SenderIP:  netip.AddrFrom4([4]byte(f[28:32])),
		TargetIP:  netip.AddrFrom4([4]byte(f[38:42])),
	}, true
}

// ARPWindow is how long a probe listens for ARP replies unless told otherwise.
// The kernel answers a request the moment it receives it (arp_process replies
// at once; only proxy ARP waits, proxy_delay, and no lab enables it), so a
// reply takes one round trip over the lab's veth pairs and bridge. Measured in
// the sandbox kernel (ARPRoundTrip, 600 requests per lab, dr-rr and
// dr-arp-flux): 0.2 ms typically, 3 ms at worst. The window is ARPMargin
// times 30 ms, ten times that worst, so that a missing reply means "no answer",
// not "not yet"; ARPProbe.Conclusive checks that the margin held.
const ARPWindow = ARPMargin * 30 * time.Millisecond

// ARPMargin is how many round trips a window must hold for silence in it to
// mean that nobody answers.
const ARPMargin = 10

// ARPReply is a reply to a probe and how long after the request it came.
type ARPReply struct {
	ARP
	After time.Duration
}

func (r ARPReply) String() string { return fmt.Sprintf("%s after %s", r.ARP, r.After) }

// ARPProbe is what one who-has brought back.
type ARPProbe struct {
	Replies  []ARPReply    // in arrival order
	Window   time.Duration // how long the probe was to listen
	Listened time.Duration // how long it did, from the request on: less than Window only when its context ended first
}

// Complete tells whether the probe listened for its whole window: only then
// does a missing reply mean that nobody answered.
func (p ARPProbe) Complete() bool { return p.Listened >= p.Window }

// Conclusive fails when the probe cannot tell who did not answer: it stopped
// listening before its window ended, or a reply took more than a margin's share
// of the window (ARPMargin round trips), so another might still have been on
// its way.
func (p ARPProbe) Conclusive() error {
	if !p.Complete() {
		return fmt.Errorf("ARP probe listened %s of its %s window: who did not answer is not known", p.Listened, p.Window)
	}
	if slowest := p.Slowest(); slowest*ARPMargin > p.Window {
		return fmt.Errorf("an ARP reply took %s, more than 1/%d of the %s window: who did not answer is not known", slowest, ARPMargin, p.Window)
	}
	return nil
}

// Slowest is the longest a reply took (0 when none came).
func (p ARPProbe) Slowest() time.Duration {
	var d time.Duration
	for _, r := range p.Replies {
		d = max(d, r.After)
	}
	return d
}

// ProbeARP asks who has target from dev in n and returns every reply that comes
// within window: with ARP flux, several hosts answer for one address. It
// listens from before the request is sent until window has passed since then
// (or ctx ends: see Listened).
func ProbeARP(ctx context.Context, n node.Node, dev string, target netip.Addr, window time.Duration) (ARPProbe, error) {
	p := ARPProbe{Window: window}
	s, err := OpenARP(n, dev)
	if err != nil {
		return p, err
	}
	defer s.Close()
	sent := time.Now()
	if err := s.Request(target); err != nil {
		return p, fmt.Errorf("%s: ARP request: %w", n.Name, err)
	}
	err = s.collect(ctx, sent.Add(window), func(a ARP, at time.Time) bool {
		if a.Op == 2 && a.SenderIP == target {
			p.Replies = append(p.Replies, ARPReply{ARP: a, After: at.Sub(sent)})
		}
		return false
	})
	p.Listened = time.Since(sent)
	return p, err
}

// ARPRoundTrip asks who has target from dev in n and returns how long the first
// reply took; it fails when none comes within timeout. Ask for an address that
// must answer (a node's own) to learn how quickly this lab answers ARP.
func ARPRoundTrip(ctx context.Context, n node.Node, dev string, target netip.Addr, timeout time.Duration) (time.Duration, error) {
	s, err := OpenARP(n, dev)
	if err != nil {
		return 0, err
	}
	defer s.Close()
	sent := time.Now()
	if err := s.Request(target); err != nil {
		return 0, fmt.Errorf("%s: ARP request: %w", n.Name, err)
	}
	var (
		rtt      time.Duration
		answered bool
	)
	err = s.collect(ctx, sent.Add(timeout), func(a ARP, at time.Time) bool {
		answered = a.Op == 2 && a.SenderIP == target
		if answered {
			rtt = at.Sub(sent)
		}
		return answered
	})
	if err == nil && !answered {
		err = fmt.Errorf("%s: no ARP reply for %s within %s", n.Name, target, timeout)
	}
	return rtt, err
}

// MAC returns the hardware address of dev in n.
func MAC(n node.Node, dev string) (net.HardwareAddr, error) {
	var mac net.HardwareAddr
	err := n.Do(func() error {
		ifc, err := net.InterfaceByName(dev)
		if err == nil {
			mac = ifc.HardwareAddr
		}
		return err
	})
	return mac, err
}

// Neighbours reads n's IPv4 neighbour table over netlink: address -> MAC, for
// entries that have one.
func Neighbours(n node.Node) (map[netip.Addr]string, error) {
	h, err := n.Netlink()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	neighs, err := h.NeighList(0, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]string{}
	for _, ne := range neighs {
		a, ok := netip.AddrFromSlice(ne.IP)
		if ok && len(ne.HardwareAddr) > 0 && ne.State&(netlink.NUD_FAILED|netlink.NUD_INCOMPLETE) == 0 {
			out[a.Unmap()] = ne.HardwareAddr.String()
		}
	}
	return out, nil
}
