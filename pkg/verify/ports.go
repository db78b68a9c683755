package verify

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
)

// The client port range a fresh namespace uses (net.ipv4.ip_local_port_range).
const (
	firstPort = 32768
	lastPort  = 60999
	numPorts  = lastPort - firstPort + 1
)

// reuseAfter is how long a client port stays unused before it is handed out
// again for the same source address: the director keeps a closed connection's
// entry in TIME_WAIT for 2 minutes (ip_vs_proto_tcp.c, fixed: ipvsadm --set
// changes only established, FIN_WAIT and UDP), from the connection's last
// packet, which comes at most a request's timeout after its port was taken.
const reuseAfter = 2*time.Minute + 15*time.Second

// portBlock is how many consecutive ports share one time stamp: the clock is
// read once per block, not per connection (in the sandbox kernel a clock read
// costs as much as a system call).
const portBlock = 256

// SourcePorts hands out client ports for the connections of a run: for each
// source address, in order through the range, each once until the range wraps.
// The kernel's own choice may take the port of an earlier connection whose
// entry the director still keeps (TIME_WAIT, 2 minutes): IPVS then drops that
// entry and schedules the new connection afresh (conn_reuse_mode), so the
// director's counts lose a connection that the models count. Seen in the
// sandbox: 8 of 300 sequential connections reused a port.
//
// How ports are kept from running out and from meeting the director's entries:
// the director keys an entry by client address and port (with the virtual
// service), so each source address has its own sequence of all 28,232 ports of
// the range; a port comes back for an address only after every other port of
// the range has been used from it, and only if its block of ports was left
// more than reuseAfter ago. When it was not (more than 28,232
// connections from one address in about 2 minutes, some 200 a second kept up
// for that long), take says how long to wait rather than reuse it: a driver
// that needs more connections per second spreads them over more source
// addresses (a check's sources). Share one SourcePorts between the clients of
// a run; it is safe for concurrent use. The zero address (the kernel's choice
// of source) is one address of its own.
type SourcePorts struct {
	mu    sync.Mutex
	first int
	addrs map[netip.Addr]*portLaps
	now   func() time.Time // the clock; time.Now unless a test sets it
}

// portLaps is one source address's position in the port range.
type portLaps struct {
	next int
	left [numPorts/portBlock + 1]time.Time // per block: when its last port was handed out (zero: never)
}

// NewSourcePorts hands out ports from first on, for every source address.
func NewSourcePorts(first uint16) *SourcePorts {
	p := &SourcePorts{first: int(first), addrs: map[netip.Addr]*portLaps{}, now: time.Now}
	if p.first < firstPort || p.first > lastPort {
		p.first = firstPort
	}
	return p
}

// take hands out the next port for connections from src. When that port's
// block was handed out less than reuseAfter ago, it hands out nothing and says
// how long to wait.
func (p *SourcePorts) take(src netip.Addr) (port uint16, wait time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.addrs[src]
	if l == nil {
		l = &portLaps{next: p.first}
		p.addrs[src] = l
	}
	block := (l.next - firstPort) / portBlock
	if (l.next-firstPort)%portBlock == 0 {
		// Entering a block: its ports were last used when it was left.
		if last := l.left[block]; !last.IsZero() {
			if d := last.Add(reuseAfter).Sub(p.now()); d > 0 {
				return 0, d
			}
		}
	}
	port = uint16(l.next)
	if l.next++; l.next > lastPort {
		l.next = firstPort
	}
	if (l.next-firstPort)%portBlock == 0 {
		// Leaving the block: its last port is in use from now on.
		l.left[block] = p.now()
	}
	return port, 0
}

// takeWait hands out the next port for src, waiting when it must (see take).
func (p *SourcePorts) takeWait(ctx context.Context, src netip.Addr) (uint16, error) {
	for {
		port, wait := p.take(src)
		if wait == 0 {
			return port, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, ctx.Err()
		case <-t.C:
		}
	}
}

// dial connects from inside n to addr, from source (the node's choice when
// zero) and, with ports, from the next free port of ports.
func dial(ctx context.Context, n node.Node, network string, source netip.Addr, ports *SourcePorts, addr string) (net.Conn, error) {
	var conn net.Conn
	for tries := 0; ; tries++ {
		port := 0
		if ports != nil {
			p, err := ports.takeWait(ctx, source)
			if err != nil {
				return nil, err
			}
			port = int(p)
		}
		err := n.Do(func() error {
			d := &net.Dialer{}
			if port != 0 || source.IsValid() {
				var ip net.IP
				if source.IsValid() {
					ip = source.AsSlice()
				}
				if network == "udp" {
					d.LocalAddr = &net.UDPAddr{IP: ip, Port: port}
				} else {
					d.LocalAddr = &net.TCPAddr{IP: ip, Port: port}
				}
			}
			var err error
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		if ports != nil && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
			continue // taken by something else here: the next one
		}
		return conn, err
	}
}
