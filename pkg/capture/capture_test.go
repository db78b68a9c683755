package capture

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

var (
	clientMAC, _ = net.ParseMAC("02:00:00:00:00:0a")
	dirMAC, _    = net.ParseMAC("02:00:00:00:00:01")
	webMAC, _    = net.ParseMAC("02:00:00:00:00:0b")
	bcast, _     = net.ParseMAC("ff:ff:ff:ff:ff:ff")
	client       = net.IPv4(203, 0, 113, 10).To4()
	vip          = net.IPv4(203, 0, 113, 1).To4()
	dip          = net.IPv4(203, 0, 113, 2).To4()
	rip          = net.IPv4(203, 0, 113, 11).To4()
)

func frame(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func arpFrame(t *testing.T, op uint16, src net.HardwareAddr, dst net.HardwareAddr, spa, tpa net.IP) []byte {
	return frame(t,
		&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: op, SourceHwAddress: src, SourceProtAddress: spa, DstHwAddress: make([]byte, 6), DstProtAddress: tpa})
}

func syn(t *testing.T, ethSrc, ethDst net.HardwareAddr, outer *layers.IPv4) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: client, DstIP: vip}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 80, Seq: 1000, SYN: true, Window: 64240}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	ls := []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: ethSrc, DstMAC: ethDst, EthernetType: layers.EthernetTypeIPv4}}
	if outer != nil {
		ls = append(ls, outer)
	}
	return frame(t, append(ls, ip, tcp)...)
}

// ack is web1's ACK to the client, straight from its MAC (DR's reply).
func ack(t *testing.T) []byte {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: vip, DstIP: client}
	tcp := &layers.TCP{SrcPort: 80, DstPort: 40000, Seq: 5000, Ack: 1001, ACK: true, Window: 64240}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	return frame(t, &layers.Ethernet{SrcMAC: webMAC, DstMAC: clientMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp)
}

// A frame's header: MACs, the outer IP addresses (ARP's for ARP), and the
// tunnelled packet's.
func TestHeaderOf(t *testing.T) {
	a := func(ip net.IP) netip.Addr { x, _ := netip.AddrFromSlice(ip); return x }
	for name, c := range map[string]struct {
		data []byte
		want Header
	}{
		"arp":  {arpFrame(t, layers.ARPReply, dirMAC, clientMAC, vip, client), Header{SrcMAC: dirMAC, DstMAC: clientMAC, Src: a(vip), Dst: a(client)}},
		"dr":   {syn(t, dirMAC, webMAC, nil), Header{SrcMAC: dirMAC, DstMAC: webMAC, Src: a(client), Dst: a(vip)}},
		"ipip": {syn(t, dirMAC, webMAC, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: dip, DstIP: rip}), Header{SrcMAC: dirMAC, DstMAC: webMAC, Src: a(dip), Dst: a(rip), InnerSrc: a(client), InnerDst: a(vip)}},
	} {
		got := HeaderOf(Decode(c.data))
		if got.SrcMAC.String() != c.want.SrcMAC.String() || got.DstMAC.String() != c.want.DstMAC.String() ||
			got.Src != c.want.Src || got.Dst != c.want.Dst || got.InnerSrc != c.want.InnerSrc || got.InnerDst != c.want.InnerDst {
			t.Errorf("%s: %+v, want %+v", name, got, c.want)
		}
	}
}

// One line per frame: ARP with its MACs, a DR frame (the real server's MAC,
// the VIP as destination), IP-in-IP for TUN.
func TestLine(t *testing.T) {
	start := time.Unix(100, 0)
	at := func(us int) time.Time { return start.Add(time.Duration(us) * time.Microsecond) }
	for _, c := range []struct {
		f    Frame
		want string
	}{
		{Frame{At: at(0), Dir: Out, Data: arpFrame(t, layers.ARPRequest, clientMAC, bcast, client, vip)},
			"0.000000 out 02:00:00:00:00:0a > ff:ff:ff:ff:ff:ff ARP who-has 203.0.113.1 tell 203.0.113.10"},
		{Frame{At: at(412), Dir: In, Data: arpFrame(t, layers.ARPReply, dirMAC, clientMAC, vip, client)},
			"0.000412 in  02:00:00:00:00:01 > 02:00:00:00:00:0a ARP 203.0.113.1 is-at 02:00:00:00:00:01"},
		{Frame{At: at(500), Dir: Out, Data: arpFrame(t, layers.ARPRequest, dirMAC, bcast, vip, vip)},
			"0.000500 out 02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff ARP announce 203.0.113.1 (gratuitous, from 02:00:00:00:00:01)"},
		{Frame{At: at(530), Dir: In, Data: syn(t, dirMAC, webMAC, nil)},
			"0.000530 in  02:00:00:00:00:01 > 02:00:00:00:00:0b IP 203.0.113.10:40000 > 203.0.113.1:80 TCP [S] seq 1000 win 64240 len 0"},
		{Frame{At: at(600), Dir: In, Data: syn(t, dirMAC, webMAC, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: dip, DstIP: rip})},
			"0.000600 in  02:00:00:00:00:01 > 02:00:00:00:00:0b IP 203.0.113.2 > 203.0.113.11 IPIP: IP 203.0.113.10:40000 > 203.0.113.1:80 TCP [S] seq 1000 win 64240 len 0"},
	} {
		if got := Line(c.f, start); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

func TestFilter(t *testing.T) {
	frames := map[string][]byte{
		"arp":  arpFrame(t, layers.ARPRequest, clientMAC, bcast, client, vip),
		"dr":   syn(t, dirMAC, webMAC, nil),
		"ipip": syn(t, dirMAC, webMAC, &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolIPv4, SrcIP: dip, DstIP: rip}),
		"ack":  ack(t),
	}
	for _, c := range []struct {
		filter string
		pass   []string
	}{
		{"arp", []string{"arp"}},
		{"tcp", []string{"dr", "ipip", "ack"}},
		{"syn", []string{"dr", "ipip"}},
		{"tcp and not syn", []string{"ack"}},
		{"not arp", []string{"dr", "ipip", "ack"}},
		{"ipip", []string{"ipip"}},
		{"host 203.0.113.1", []string{"arp", "dr", "ack"}}, // the outer header: the tunnel's is DIP > RIP
		{"dst host 203.0.113.11", []string{"ipip"}},
		{"tcp and dst port 80", []string{"dr", "ipip"}},
		{"src port 80", []string{"ack"}},
		{"arp or (tcp and not ipip)", []string{"arp", "dr", "ack"}},
		{"ether dst 02:00:00:00:00:0b && !ipip", []string{"dr"}},
		{"ether host ff:ff:ff:ff:ff:ff", []string{"arp"}},
	} {
		f, err := ParseFilter(c.filter)
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		for name, data := range frames {
			want := false
			for _, p := range c.pass {
				want = want || p == name
			}
			if got := f.Match(Decode(data)); got != want {
				t.Errorf("%q on %s: %v, want %v", c.filter, name, got, want)
			}
		}
	}
	for text, want := range map[string]string{
		"":                  `filter "": empty`,
		"tcp and":           `filter "tcp and": it ends too soon`,
		"port http":         `filter "port http": port "http": not a port number`,
		"host 203.0.113.":   `filter "host 203.0.113.": host "203.0.113.": not an IP address`,
		"vlan 10":           `filter "vlan 10": "vlan": not a primitive lvslab reads (arp, ip, ip6, tcp, udp, icmp, ipip, syn, host, port, ether host, src/dst)`,
		"(arp":              `filter "(arp": ( without )`,
		"arp tcp":           `filter "arp tcp": "tcp": expected and, or, or the end`,
		"ether host 1:2:3x": `filter "ether host 1:2:3x": ether host "1:2:3x": not a MAC address`,
	} {
		_, err := ParseFilter(text)
		if err == nil || err.Error() != want {
			t.Errorf("%q: error %v, want %s", text, err, want)
		}
	}
}

// A pcap file reads back as the frames written, Ethernet link type.
func TestPcapWriter(t *testing.T) {
	var b bytes.Buffer
	w, err := NewPcapWriter(&b)
	if err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{arpFrame(t, layers.ARPRequest, clientMAC, bcast, client, vip), syn(t, dirMAC, webMAC, nil)}
	at := time.Unix(1700000000, 123456000)
	for _, f := range frames {
		if err := w.Write(Frame{At: at, Data: f}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := pcapgo.NewReader(&b)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Fatalf("link type %v", r.LinkType())
	}
	for i, want := range frames {
		data, ci, err := r.ReadPacketData()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(data, want) || !ci.Timestamp.Equal(at) {
			t.Fatalf("frame %d differs (at %v)", i, ci.Timestamp)
		}
	}
}
