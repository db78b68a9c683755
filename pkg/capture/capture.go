// Package capture records the frames of one interface of a lab node: an
// AF_PACKET socket opened in the node's network namespace (no tcpdump
// process, no libpcap), the frames written as a pcap file any Wireshark opens
// (gopacket's pcapgo) or decoded one line each (gopacket's layers): ARP
// who-has and is-at with their MACs, TCP flags, IP-in-IP for LVS-TUN, and
// the Ethernet addresses that show LVS-DR's MAC rewrite.
package capture

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/unix"

	"github.com/lvslab/lvslab/pkg/node"
)

// Direction is which way a frame went through the interface.
type Direction string

// The directions of a frame.
const (
	In  Direction = "in"
	Out Direction = "out"
)

// Frame is one captured frame.
type Frame struct {
	At   time.Time
	Dir  Direction
	Data []byte
}

// snapLen is how much of a frame is kept: all of it on the lab's links.
const snapLen = 65535

// Options bound a capture: it ends after Count frames (0: no limit), after
// Timeout (0: none), or when its context ends, whichever comes first.
type Options struct {
	Count   int
	Timeout time.Duration
	Filter  *Filter // nil: every frame
}

// Capture reads frames from interface dev of node n and calls each with every
// frame the filter lets through, until opts or ctx end it. The socket is
// opened in the node's namespace before Capture returns its first frame, so a
// caller that starts traffic after Capture has begun (see Start) misses none.
func Capture(ctx context.Context, n node.Node, dev string, opts Options, each func(Frame) error) error {
	s, err := Start(n, dev)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Run(ctx, opts, each)
}

// Socket is an open capture of one interface.
type Socket struct {
	f *os.File
}

// Start opens an AF_PACKET socket on interface dev in node n's namespace; it
// receives every frame through dev from then on.
func Start(n node.Node, dev string) (*Socket, error) {
	var fd int
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return fmt.Errorf("AF_PACKET socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind to %s: %w", dev, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: capture on %s: %w", n.Name, dev, err)
	}
	// Non-blocking, so that Go's poller waits for it and deadlines work.
	return &Socket{f: os.NewFile(uintptr(fd), n.Name+"/"+dev)}, nil
}

// Close closes the socket.
func (s *Socket) Close() error { return s.f.Close() }

// Run reads frames until opts or ctx end it, calling each for every frame
// the filter lets through.
func (s *Socket) Run(ctx context.Context, opts Options, each func(Frame) error) error {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return err
	}
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	stop := context.AfterFunc(ctx, func() { _ = s.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, snapLen)
	seen := 0
	for opts.Count == 0 || seen < opts.Count {
		var n int
		var from unix.Sockaddr
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
				return nil // the capture's time is up: not an error
			}
			return err
		}
		if rerr != nil {
			return rerr
		}
		fr := Frame{At: time.Now(), Dir: In, Data: append([]byte(nil), buf[:n]...)}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			fr.Dir = Out
		}
		if opts.Filter != nil && !opts.Filter.Match(Decode(fr.Data)) {
			continue
		}
		seen++
		if err := each(fr); err != nil {
			return err
		}
	}
	return nil
}

func htons(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Decode decodes an Ethernet frame with gopacket.
func Decode(data []byte) gopacket.Packet {
	return gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: true, NoCopy: true})
}

// PcapWriter writes frames as a pcap file (Ethernet link type).
type PcapWriter struct {
	w *pcapgo.Writer
}

// NewPcapWriter writes the pcap file header to w.
func NewPcapWriter(w io.Writer) (*PcapWriter, error) {
	pw := pcapgo.NewWriter(w)
	if err := pw.WriteFileHeader(snapLen, layers.LinkTypeEthernet); err != nil {
		return nil, err
	}
	return &PcapWriter{w: pw}, nil
}

// Write writes one frame.
func (p *PcapWriter) Write(f Frame) error {
	return p.w.WritePacket(gopacket.CaptureInfo{Timestamp: f.At, CaptureLength: len(f.Data), Length: len(f.Data)}, f.Data)
}
