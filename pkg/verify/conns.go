package verify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Conn is one entry of the director's IPVS connection table.
type Conn struct {
	Proto    string         // TCP, UDP; IP for a firewall-mark template
	Client   netip.AddrPort // FromIP:FPrt
	Virtual  netip.AddrPort // ToIP:TPrt (a firewall-mark template holds the mark in ToIP)
	Dest     netip.AddrPort // DestIP:DPrt
	State    string
	Expires  int  // seconds
	Template bool // a persistence template: client port 0 (state NONE)
}

// ReadConns reads the director's IPVS connection table. It reads
// /proc/thread-self/net, not /proc/net: /proc/net is /proc/self/net, whose
// namespace is the thread group leader's, not that of the thread in the node.
func ReadConns(director node.Node) ([]Conn, error) {
	var b []byte
	err := director.Do(func() (err error) {
		b, err = os.ReadFile("/proc/thread-self/net/ip_vs_conn")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", director.Name, err)
	}
	return ParseConns(b)
}

// ParseConns parses the text of /proc/net/ip_vs_conn.
func ParseConns(b []byte) ([]Conn, error) {
	var out []Conn
	sc := bufio.NewScanner(bytes.NewReader(b))
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 9 {
			continue
		}
		c := Conn{Proto: f[0], State: f[7]}
		var err error
		if c.Client, err = hexAddrPort(f[1], f[2]); err == nil {
			if c.Virtual, err = hexAddrPort(f[3], f[4]); err == nil {
				c.Dest, err = hexAddrPort(f[5], f[6])
			}
		}
		if err != nil {
			return nil, fmt.Errorf("ip_vs_conn: %q: %w", sc.Text(), err)
		}
		c.Expires, _ = strconv.Atoi(f[8])
		// Templates hold the service's protocol (IP for a firewall mark) and port 0
		// for the client, which no real connection has.
		c.Template = c.Client.Port() == 0
		out = append(out, c)
	}
	return out, sc.Err()
}

func hexAddrPort(addr, port string) (netip.AddrPort, error) {
	p, err := strconv.ParseUint(port, 16, 16)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var a netip.Addr
	if len(addr) == 8 && !strings.Contains(addr, ":") {
		v, err := strconv.ParseUint(addr, 16, 32)
		if err != nil {
			return netip.AddrPort{}, err
		}
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v))
		a = netip.AddrFrom4(b)
	} else if a, err = netip.ParseAddr(addr); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

// AddSources adds n addresses from prefix (from its host number first onwards) to
// dev in node n, as extra client source addresses for a run, and returns them
// with a function that removes them again.
func AddSources(n node.Node, dev string, first netip.Prefix, count int) ([]netip.Addr, func() error, error) {
	h, err := n.Netlink()
	if err != nil {
		return nil, nil, err
	}
	link, err := h.LinkByName(dev)
	if err != nil {
		h.Close()
		return nil, nil, err
	}
	var added []netip.Addr
	remove := func() error {
		defer h.Close()
		for _, a := range added {
			nl := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(first.Bits(), a.BitLen())}}
			if err := h.AddrDel(link, nl); err != nil {
				return fmt.Errorf("%s: remove source %s: %w", n.Name, a, err)
			}
		}
		return nil
	}
	a := first.Addr()
	for range count {
		if !first.Contains(a) {
			remove()
			return nil, nil, fmt.Errorf("%s: %d sources do not fit in %s", n.Name, count, first)
		}
		nl := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(first.Bits(), a.BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(link, nl); err != nil {
			remove()
			return nil, nil, fmt.Errorf("%s: add source %s: %w", n.Name, a, err)
		}
		added = append(added, a)
		a = a.Next()
	}
	return added, remove, nil
}

// Hold opens count TCP connections from n to addr and keeps them open (they stay
// active at the director). It returns their local addresses and a function that
// closes them. Ports, when not nil, gives their source ports.
func Hold(ctx context.Context, n node.Node, addr netip.AddrPort, count int, ports ...*SourcePorts) ([]netip.AddrPort, func(), error) {
	h := Holder{From: n}
	if len(ports) > 0 {
		h.Ports = ports[0]
	}
	return h.Hold(ctx, addr, count)
}

// Holder opens TCP connections from inside a node and keeps them open.
type Holder struct {
	From   node.Node
	Source netip.Addr   // source address; the kernel's choice when zero
	Ports  *SourcePorts // source ports, each used once; the kernel's choice when nil
}

// Hold opens count connections to addr, each established before the next is
// opened. It returns their local addresses and a function that closes them.
func (h Holder) Hold(ctx context.Context, addr netip.AddrPort, count int) ([]netip.AddrPort, func(), error) {
	conns, err := h.HoldConns(ctx, addr, count)
	if err != nil {
		return nil, nil, err
	}
	return Locals(conns), func() { closeConns(conns) }, nil
}

// HoldConns opens count connections to addr, each established before the
// next is opened, and sends nothing on them.
func (h Holder) HoldConns(ctx context.Context, addr netip.AddrPort, count int) ([]net.Conn, error) {
	var conns []net.Conn
	for range count {
		c, err := dial(ctx, h.From, "tcp", h.Source, h.Ports, addr.String())
		if err != nil {
			closeConns(conns)
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// Locals are connections' local addresses.
func Locals(conns []net.Conn) []netip.AddrPort {
	var out []netip.AddrPort
	for _, c := range conns {
		a := c.LocalAddr().(*net.TCPAddr).AddrPort()
		out = append(out, netip.AddrPortFrom(a.Addr().Unmap(), a.Port()))
	}
	return out
}

func closeConns(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}
