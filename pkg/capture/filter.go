package capture

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Filter is a capture filter in a part of tcpdump's language, evaluated in
// Go on the decoded frame (lvslab compiles no BPF: that needs libpcap).
//
//	primitives: arp  ip  ip6  tcp  udp  icmp  ipip
//	            syn                      (lvslab's: a TCP SYN without ACK, a connection's first segment)
//	            [src|dst] host ADDR      (an IP address: the outer IP header, or ARP's)
//	            [src|dst] port N         (TCP or UDP, the innermost header)
//	            ether [src|dst] host MAC
//	operators:  not (!)  and (&&)  or (||)  ( ... )
//
// "arp or (tcp and port 80)", "host 203.0.113.1 and not arp".
type Filter struct {
	text string
	root expr
}

// String returns the filter as given.
func (f *Filter) String() string { return f.text }

// Match reports whether a decoded frame passes.
func (f *Filter) Match(p gopacket.Packet) bool { return f.root.match(p) }

type expr interface{ match(gopacket.Packet) bool }

type (
	and   [2]expr
	or    [2]expr
	not   struct{ e expr }
	match func(gopacket.Packet) bool
)

func (e and) match(p gopacket.Packet) bool   { return e[0].match(p) && e[1].match(p) }
func (e or) match(p gopacket.Packet) bool    { return e[0].match(p) || e[1].match(p) }
func (e not) match(p gopacket.Packet) bool   { return !e.e.match(p) }
func (e match) match(p gopacket.Packet) bool { return e(p) }

// ParseFilter parses a filter; an error names the word it could not read.
func ParseFilter(text string) (*Filter, error) {
	text = strings.TrimSpace(text)
	r := strings.NewReplacer("(", " ( ", ")", " ) ", "!", " ! ")
	p := &parser{words: strings.Fields(r.Replace(text))}
	if len(p.words) == 0 {
		return nil, fmt.Errorf("filter %q: empty", text)
	}
	e, err := p.or()
	if err == nil && p.i < len(p.words) {
		err = fmt.Errorf("%q: expected and, or, or the end", p.words[p.i])
	}
	if err != nil {
		return nil, fmt.Errorf("filter %q: %w", text, err)
	}
	return &Filter{text: text, root: e}, nil
}

type parser struct {
	words []string
	i     int
}

func (p *parser) peek() string {
	if p.i < len(p.words) {
		return p.words[p.i]
	}
	return ""
}

func (p *parser) next() (string, error) {
	if p.i >= len(p.words) {
		return "", fmt.Errorf("it ends too soon")
	}
	p.i++
	return p.words[p.i-1], nil
}

func (p *parser) or() (expr, error) {
	e, err := p.and()
	for err == nil && (p.peek() == "or" || p.peek() == "||") {
		p.i++
		var r expr
		if r, err = p.and(); err == nil {
			e = or{e, r}
		}
	}
	return e, err
}

func (p *parser) and() (expr, error) {
	e, err := p.unary()
	for err == nil && (p.peek() == "and" || p.peek() == "&&") {
		p.i++
		var r expr
		if r, err = p.unary(); err == nil {
			e = and{e, r}
		}
	}
	return e, err
}

func (p *parser) unary() (expr, error) {
	w, err := p.next()
	if err != nil {
		return nil, err
	}
	switch w {
	case "not", "!":
		e, err := p.unary()
		return not{e}, err
	case "(":
		e, err := p.or()
		if err != nil {
			return nil, err
		}
		if c, _ := p.next(); c != ")" {
			return nil, fmt.Errorf("( without )")
		}
		return e, nil
	}
	return p.primitive(w)
}

func has(t gopacket.LayerType) match {
	return func(p gopacket.Packet) bool { return p.Layer(t) != nil }
}

func (p *parser) primitive(w string) (expr, error) {
	switch w {
	case "arp":
		return has(layers.LayerTypeARP), nil
	case "ip":
		return has(layers.LayerTypeIPv4), nil
	case "ip6":
		return has(layers.LayerTypeIPv6), nil
	case "tcp":
		return has(layers.LayerTypeTCP), nil
	case "udp":
		return has(layers.LayerTypeUDP), nil
	case "icmp":
		return match(func(pk gopacket.Packet) bool {
			return pk.Layer(layers.LayerTypeICMPv4) != nil || pk.Layer(layers.LayerTypeICMPv6) != nil
		}), nil
	case "syn":
		return match(func(pk gopacket.Packet) bool {
			t, ok := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
			return ok && t.SYN && !t.ACK
		}), nil
	case "ipip":
		return match(func(pk gopacket.Packet) bool {
			n := 0
			for _, l := range pk.Layers() {
				if l.LayerType() == layers.LayerTypeIPv4 || l.LayerType() == layers.LayerTypeIPv6 {
					n++
				}
			}
			return n > 1
		}), nil
	case "ether":
		dir := ""
		if d := p.peek(); d == "src" || d == "dst" {
			dir = d
			p.i++
		}
		if p.peek() == "host" {
			p.i++
		}
		v, err := p.next()
		if err != nil {
			return nil, fmt.Errorf("ether host: a MAC address must follow")
		}
		mac, err := net.ParseMAC(v)
		if err != nil {
			return nil, fmt.Errorf("ether host %q: not a MAC address", v)
		}
		return match(func(pk gopacket.Packet) bool {
			eth, ok := pk.LinkLayer().(*layers.Ethernet)
			if !ok {
				return false
			}
			return (dir != "dst" && eth.SrcMAC.String() == mac.String()) || (dir != "src" && eth.DstMAC.String() == mac.String())
		}), nil
	case "src", "dst":
		k, err := p.next()
		if err != nil || (k != "host" && k != "port") {
			return nil, fmt.Errorf("%s: host or port must follow", w)
		}
		return p.hostPort(w, k)
	case "host", "port":
		return p.hostPort("", w)
	}
	return nil, fmt.Errorf("%q: not a primitive lvslab reads (arp, ip, ip6, tcp, udp, icmp, ipip, syn, host, port, ether host, src/dst)", w)
}

func (p *parser) hostPort(dir, kind string) (expr, error) {
	v, err := p.next()
	if err != nil {
		return nil, fmt.Errorf("%s: a value must follow", kind)
	}
	if kind == "port" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("port %q: not a port number", v)
		}
		port := uint16(n)
		return match(func(pk gopacket.Packet) bool {
			var s, d uint16
			switch {
			case pk.Layer(layers.LayerTypeTCP) != nil:
				t := pk.Layer(layers.LayerTypeTCP).(*layers.TCP)
				s, d = uint16(t.SrcPort), uint16(t.DstPort)
			case pk.Layer(layers.LayerTypeUDP) != nil:
				u := pk.Layer(layers.LayerTypeUDP).(*layers.UDP)
				s, d = uint16(u.SrcPort), uint16(u.DstPort)
			default:
				return false
			}
			return (dir != "dst" && s == port) || (dir != "src" && d == port)
		}), nil
	}
	addr, err := netip.ParseAddr(v)
	if err != nil {
		return nil, fmt.Errorf("host %q: not an IP address", v)
	}
	return match(func(pk gopacket.Packet) bool {
		s, d, ok := addresses(pk)
		return ok && ((dir != "dst" && s == addr) || (dir != "src" && d == addr))
	}), nil
}

// Header is what identifies a frame: its Ethernet addresses, its IP
// addresses (the outer header's, or ARP's sender and target), and for IP in
// IP those of the packet it carries.
type Header struct {
	SrcMAC, DstMAC     net.HardwareAddr
	Src, Dst           netip.Addr
	InnerSrc, InnerDst netip.Addr
}

// HeaderOf reads a decoded frame's Header; fields the frame lacks stay zero.
func HeaderOf(p gopacket.Packet) Header {
	var h Header
	if eth, ok := p.LinkLayer().(*layers.Ethernet); ok {
		h.SrcMAC, h.DstMAC = eth.SrcMAC, eth.DstMAC
	}
	h.Src, h.Dst, _ = addresses(p)
	depth := 0
	for _, l := range p.Layers() {
		var s, d netip.Addr
		switch ip := l.(type) {
		case *layers.IPv4:
			s, _ = netip.AddrFromSlice(ip.SrcIP.To4())
			d, _ = netip.AddrFromSlice(ip.DstIP.To4())
		case *layers.IPv6:
			s, _ = netip.AddrFromSlice(ip.SrcIP)
			d, _ = netip.AddrFromSlice(ip.DstIP)
		default:
			continue
		}
		if depth == 1 {
			h.InnerSrc, h.InnerDst = s, d
		}
		depth++
	}
	return h
}

// addresses are a frame's outer IP addresses, or its ARP protocol addresses.
func addresses(p gopacket.Packet) (src, dst netip.Addr, ok bool) {
	if a, isARP := p.Layer(layers.LayerTypeARP).(*layers.ARP); isARP {
		s, _ := netip.AddrFromSlice(a.SourceProtAddress)
		d, _ := netip.AddrFromSlice(a.DstProtAddress)
		return s.Unmap(), d.Unmap(), true
	}
	for _, l := range p.Layers() {
		switch ip := l.(type) {
		case *layers.IPv4:
			s, _ := netip.AddrFromSlice(ip.SrcIP.To4())
			d, _ := netip.AddrFromSlice(ip.DstIP.To4())
			return s, d, true
		case *layers.IPv6:
			s, _ := netip.AddrFromSlice(ip.SrcIP)
			d, _ := netip.AddrFromSlice(ip.DstIP)
			return s, d, true
		}
	}
	return netip.Addr{}, netip.Addr{}, false
}
