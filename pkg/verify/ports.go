package verify

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"github.com/lvslab/lvslab/pkg/node"
)

// The client port range a fresh namespace uses (net.ipv4.ip_local_port_range).
const (
	firstPort = 32768
	lastPort  = 60999
)

// SourcePorts hands out client ports in order, each once (until the range
// wraps), for the connections of a run. The kernel's own choice may take the
// port of an earlier connection whose entry the director still keeps (TIME_WAIT,
// 2 minutes): IPVS then drops that entry and schedules the new connection
// afresh (conn_reuse_mode), so the director's counts lose a connection that the
// models count. Seen in the sandbox: 8 of 300 sequential connections reused a
// port. Share one SourcePorts between the clients of a run; it is safe for
// concurrent use.
type SourcePorts struct {
	mu   sync.Mutex
	next int
}

// NewSourcePorts hands out ports from first on.
func NewSourcePorts(first uint16) *SourcePorts {
	p := &SourcePorts{next: int(first)}
	if p.next < firstPort || p.next > lastPort {
		p.next = firstPort
	}
	return p
}

func (p *SourcePorts) take() uint16 {
	p.mu.Lock()
	defer p.mu.Unlock()
	port := p.next
	if p.next++; p.next > lastPort {
		p.next = firstPort
	}
	return uint16(port)
}

// dial connects from inside n to addr, from source (the node's choice when
// zero) and, with ports, from the next free port of ports.
func dial(ctx context.Context, n node.Node, network string, source netip.Addr, ports *SourcePorts, addr string) (net.Conn, error) {
	var conn net.Conn
	err := n.Do(func() error {
		for tries := 0; ; tries++ {
			d := &net.Dialer{}
			port := 0
			if ports != nil {
				port = int(ports.take())
			}
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
			if ports != nil && errors.Is(err, syscall.EADDRINUSE) && tries < 100 {
				continue // taken by something else here: the next one
			}
			return err
		}
	})
	return conn, err
}
