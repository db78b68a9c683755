package verify

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
)

// UDPClient sends datagrams from inside a node's namespace, each from a new
// socket (a fresh source port, so a new IPVS connection), and reads the answer.
type UDPClient struct {
	From    node.Node
	Source  netip.Addr    // the source address; the node's own choice when zero
	Ports   *SourcePorts  // source ports, each used once; the kernel's choice when nil
	Timeout time.Duration // per request; 2s when zero
}

// Send sends n datagrams to addr and records which server answered each.
func (c UDPClient) Send(ctx context.Context, addr netip.AddrPort, n int) Result {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	r := Result{Counts: map[string]int{}}
	for i := range n {
		r.Started = append(r.Started, time.Now())
		name, local, err := c.once(ctx, addr, timeout)
		r.Locals = append(r.Locals, local)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("datagram %d: %w", i+1, err))
		} else {
			r.Counts[name]++
		}
		r.Sequence = append(r.Sequence, name)
	}
	return r
}

func (c UDPClient) once(ctx context.Context, addr netip.AddrPort, timeout time.Duration) (name string, local netip.AddrPort, err error) {
	conn, err := dial(ctx, c.From, "udp", c.Source, c.Ports, addr.String())
	if err != nil {
		return "", local, err
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		local = netip.AddrPortFrom(a.AddrPort().Addr().Unmap(), a.AddrPort().Port())
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte("who?\n")); err != nil {
		return "", local, err
	}
	buf := make([]byte, 512)
	k, err := conn.Read(buf)
	if err != nil {
		return "", local, err
	}
	name, _, _ = strings.Cut(string(buf[:k]), "\n")
	return strings.TrimSpace(name), local, nil
}
