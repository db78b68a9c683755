package capture

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// Line is a frame in one line, from start: the seconds since start, the
// direction, the Ethernet addresses (DR rewrites them, not the IP addresses)
// and what the frame carries.
//
//	0.000000 out 02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff ARP who-has 203.0.113.1 tell 203.0.113.10
//	0.000412 in  02:00:00:00:00:01 > 02:00:00:00:00:0a ARP 203.0.113.1 is-at 02:00:00:00:00:01
//	0.000530 out 02:00:00:00:00:0a > 02:00:00:00:00:01 IP 203.0.113.10:40000 > 203.0.113.1:80 TCP [S] seq 1 win 64240
func Line(f Frame, start time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%.6f %-3s ", f.At.Sub(start).Seconds(), f.Dir)
	p := Decode(f.Data)
	eth, ok := p.LinkLayer().(*layers.Ethernet)
	if !ok {
		fmt.Fprintf(&b, "%d bytes, not Ethernet", len(f.Data))
		return b.String()
	}
	fmt.Fprintf(&b, "%s > %s ", eth.SrcMAC, eth.DstMAC)
	b.WriteString(Summary(p))
	return b.String()
}

// Summary says what a decoded frame carries, after its Ethernet header.
func Summary(p gopacket.Packet) string {
	if a, ok := p.Layer(layers.LayerTypeARP).(*layers.ARP); ok {
		return arp(a)
	}
	if nl := p.NetworkLayer(); nl != nil {
		return network(p, nl.LayerType(), 0)
	}
	eth, ok := p.LinkLayer().(*layers.Ethernet)
	if ok {
		return fmt.Sprintf("ethertype 0x%04x, %d bytes", uint16(eth.EthernetType), len(p.Data()))
	}
	return fmt.Sprintf("%d bytes", len(p.Data()))
}

func arp(a *layers.ARP) string {
	spa, tpa := net.IP(a.SourceProtAddress), net.IP(a.DstProtAddress)
	switch a.Operation {
	case layers.ARPRequest:
		if spa.Equal(tpa) {
			return fmt.Sprintf("ARP announce %s (gratuitous, from %s)", spa, net.HardwareAddr(a.SourceHwAddress))
		}
		return fmt.Sprintf("ARP who-has %s tell %s", tpa, spa)
	case layers.ARPReply:
		if spa.Equal(tpa) {
			return fmt.Sprintf("ARP %s is-at %s (gratuitous)", spa, net.HardwareAddr(a.SourceHwAddress))
		}
		return fmt.Sprintf("ARP %s is-at %s", spa, net.HardwareAddr(a.SourceHwAddress))
	}
	return fmt.Sprintf("ARP operation %d", a.Operation)
}

// network describes the n-th IP layer of p (IP-in-IP nests one in another).
func network(p gopacket.Packet, t gopacket.LayerType, depth int) string {
	var ips []gopacket.Layer
	for _, l := range p.Layers() {
		if l.LayerType() == layers.LayerTypeIPv4 || l.LayerType() == layers.LayerTypeIPv6 {
			ips = append(ips, l)
		}
	}
	if depth >= len(ips) {
		return ""
	}
	var src, dst string
	var family string
	var inner bool
	var proto layers.IPProtocol
	switch ip := ips[depth].(type) {
	case *layers.IPv4:
		src, dst, family, proto = ip.SrcIP.String(), ip.DstIP.String(), "IP", ip.Protocol
		inner = ip.Protocol == layers.IPProtocolIPv4
	case *layers.IPv6:
		src, dst, family, proto = ip.SrcIP.String(), ip.DstIP.String(), "IP6", ip.NextHeader
		inner = ip.NextHeader == layers.IPProtocolIPv6 || ip.NextHeader == layers.IPProtocolIPv4
	}
	if inner && depth+1 < len(ips) {
		return fmt.Sprintf("%s %s > %s IPIP: %s", family, src, dst, network(p, t, depth+1))
	}
	if depth+1 < len(ips) {
		return fmt.Sprintf("%s %s > %s proto %d", family, src, dst, proto)
	}
	if tcp, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
		s := fmt.Sprintf("%s %s > %s TCP [%s] seq %d", family, join(src, uint16(tcp.SrcPort)), join(dst, uint16(tcp.DstPort)), flags(tcp), tcp.Seq)
		if tcp.ACK {
			s += fmt.Sprintf(" ack %d", tcp.Ack)
		}
		return s + fmt.Sprintf(" win %d len %d", tcp.Window, len(tcp.Payload))
	}
	if udp, ok := p.Layer(layers.LayerTypeUDP).(*layers.UDP); ok {
		return fmt.Sprintf("%s %s > %s UDP len %d", family, join(src, uint16(udp.SrcPort)), join(dst, uint16(udp.DstPort)), len(udp.Payload))
	}
	if icmp, ok := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4); ok {
		return fmt.Sprintf("%s %s > %s ICMP %s id %d seq %d", family, src, dst, icmp.TypeCode, icmp.Id, icmp.Seq)
	}
	if icmp, ok := p.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6); ok {
		return fmt.Sprintf("%s %s > %s ICMPv6 %s", family, src, dst, icmp.TypeCode)
	}
	return fmt.Sprintf("%s %s > %s proto %d", family, src, dst, proto)
}

// join writes address and port as lvslab does elsewhere (IPv6 in brackets).
func join(addr string, port uint16) string {
	return net.JoinHostPort(addr, fmt.Sprint(port))
}

// flags writes TCP flags as tcpdump does: S, F, R, P, U, then . for ACK.
func flags(t *layers.TCP) string {
	var b strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{t.SYN, 'S'}, {t.FIN, 'F'}, {t.RST, 'R'}, {t.PSH, 'P'}, {t.URG, 'U'}, {t.ACK, '.'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// Frames counts frames in words: "1 frame", "3 frames".
func Frames(n int) string {
	if n == 1 {
		return "1 frame"
	}
	return fmt.Sprintf("%d frames", n)
}
