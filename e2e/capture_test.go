package e2e

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/pkg/capture"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
)

// captureWhile runs lvslab capture with args until it returns, sending
// traffic with send every 200 ms meanwhile (the capture's socket opens a
// moment after it starts), and returns its output.
func captureWhile(send func(), args ...string) string {
	GinkgoHelper()
	type result struct {
		out, stderr string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		defer GinkgoRecover()
		out, stderr, code := lv(append([]string{"capture", "--timeout", "20s"}, args...)...)
		done <- result{out, stderr, code}
	}()
	for {
		select {
		case r := <-done:
			Expect(r.code).To(Equal(0), r.stderr)
			Expect(r.stderr).To(MatchRegexp(`capturing on \S+ \S+\n(1 frame|\d+ frames)\n`))
			return r.out
		default:
			send()
		}
	}
}

// macOf is the MAC of a node's interface.
func macOf(lab, node, dev string) string {
	GinkgoHelper()
	out, _, code := lv("exec", "--lab", lab, node, "--", "ip", "-br", "link", "show", "dev", dev)
	Expect(code).To(Equal(0))
	f := strings.Fields(out) // eth1@if7 UP 02:42:...
	Expect(len(f)).To(BeNumerically(">=", 3), out)
	return f[2]
}

var _ = Describe("lvslab capture", Label("capture", "dr"), func() {
	It("decodes a real ARP exchange and shows DR's MAC rewrite: the frame to the real server's MAC with the VIP as destination", func() {
		up("scenarios/dr-rr.yaml", "cap-dr")
		director, web1 := macOf("cap-dr", "director", "eth1"), macOf("cap-dr", "web1", "eth1")
		client := macOf("cap-dr", "client", "eth1")

		arp := captureWhile(func() {
			lv("exec", "--lab", "cap-dr", "client", "--", "ip", "neigh", "flush", "dev", "eth1")
			lv("exec", "--lab", "cap-dr", "client", "--", "arping", "-c", "1", "-w", "1", "-i", "eth1", "203.0.113.1")
		}, "--lab", "cap-dr", "client", "eth1", "--filter", "arp and host 203.0.113.1", "-c", "4")
		GinkgoWriter.Println(arp)
		Expect(arp).To(MatchRegexp(`(?m)^\d+\.\d{6} out %s > ff:ff:ff:ff:ff:ff ARP who-has 203\.0\.113\.1 tell 203\.0\.113\.10$`, client))
		// Only the director answers: the real servers hold the VIP on lo with arp_ignore=1.
		Expect(arp).To(MatchRegexp(`(?m)^\d+\.\d{6} in  %s > %s ARP 203\.0\.113\.1 is-at %s$`, director, client, director))
		Expect(arp).NotTo(ContainSubstring("is-at " + web1))

		// One command line: the capture runs arping in the node once its socket is open.
		lv("exec", "--lab", "cap-dr", "client", "--", "ip", "neigh", "flush", "dev", "eth1")
		one, stderr, code := lv("capture", "--lab", "cap-dr", "client", "eth1", "--filter", "arp", "--timeout", "10s",
			"--", "arping", "-c", "1", "-w", "1", "-i", "eth1", "203.0.113.1")
		Expect(code).To(Equal(0), stderr)
		Expect(one).To(MatchRegexp(`(?m)^\d+\.\d{6} out %s > ff:ff:ff:ff:ff:ff ARP who-has 203\.0\.113\.1 tell 203\.0\.113\.10$`, client))
		Expect(one).To(MatchRegexp(`(?m)^\d+\.\d{6} in  %s > %s ARP 203\.0\.113\.1 is-at %s$`, director, client, director))

		syn := captureWhile(func() {
			lv("exec", "--lab", "cap-dr", "client", "--", "curl", "-s", "-o", "/dev/null", "--max-time", "2", "http://203.0.113.1/")
		}, "--lab", "cap-dr", "web1", "eth1", "--filter", "tcp and dst port 80", "-c", "1")
		Expect(syn).To(MatchRegexp(`^\d+\.\d{6} in  %s > %s IP 203\.0\.113\.10:\d+ > 203\.0\.113\.1:80 TCP \[S\] seq \d+ win \d+ len 0\n$`,
			regexp.QuoteMeta(director), regexp.QuoteMeta(web1)))
	})

	It("writes a pcap file of the frames, Ethernet, that reads back", func() {
		up("scenarios/nat-rr.yaml", "cap-pcap")
		file := filepath.Join(GinkgoT().TempDir(), "client.pcap")
		captureWhile(func() {
			lv("exec", "--lab", "cap-pcap", "client", "--", "curl", "-s", "-o", "/dev/null", "--max-time", "2", "http://203.0.113.1/")
		}, "--lab", "cap-pcap", "client", "eth1", "--filter", "tcp", "-c", "6", "-w", file)
		f, err := os.Open(file)
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		r, err := pcapgo.NewReader(f)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.LinkType()).To(Equal(layers.LinkTypeEthernet))
		n := 0
		for {
			data, _, err := r.ReadPacketData()
			if err != nil {
				break
			}
			n++
			Expect(capture.Decode(data).Layer(layers.LayerTypeTCP)).NotTo(BeNil())
		}
		Expect(n).To(Equal(6))
	})

	It("shows LVS-TUN's IP-in-IP: the director's address outside, the client's request to the VIP inside", func() {
		up("scenarios/tun-rr.yaml", "cap-tun")
		out := captureWhile(func() {
			lv("exec", "--lab", "cap-tun", "client", "--", "curl", "-s", "-o", "/dev/null", "--max-time", "2", "http://203.0.113.1/")
		}, "--lab", "cap-tun", "web1", "eth1", "--filter", "ipip", "-c", "1")
		Expect(out).To(MatchRegexp(`^\d+\.\d{6} in  \S+ > \S+ IP 203\.0\.113\.2 > 203\.0\.113\.11 IPIP: IP 203\.0\.113\.10:\d+ > 203\.0\.113\.1:80 TCP \[S\]`))
	})

	It("judges a check's capture: DR's replies come from the real servers' MACs, so a check expecting them from the director fails, naming what it saw", func() {
		zero := 0
		file := variant("scenarios/dr-rr.yaml", func(s *scenario.Scenario) {
			s.Checks = []lab.Check{{
				Name: "replies through the director (wrong for DR)", From: "client", Dev: "eth1", HTTP: "http://203.0.113.1/", Requests: 2,
				Capture: &lab.Capture{Node: "client", Dev: "eth1", Filter: "tcp and src port 80"},
				Expect:  lab.Expect{Counts: map[string]int{"web1": 1, "web2": 1}, Frames: []lab.FrameMatch{{From: "director", To: "client"}, {From: "web1", Src: netip.MustParseAddr("203.0.113.1")}, {From: "director", Count: &zero}}},
			}}
		})
		results, _, code := verifyJSON(file)
		Expect(code).To(Equal(1))
		Expect(results).To(HaveLen(1))
		r := results[0]
		Expect(r.Passed).To(BeFalse())
		// Each real server's segments, none from the director: the
		// expectations that hold (web1's, and none from the director) are
		// not named.
		Expect(r.Message).To(MatchRegexp(`^no frame director > client in the capture \(\d+ frames\)$`))
		Expect(r.Frames).To(ContainElement(MatchRegexp(`^\d+\.\d{6} in  \S+ > \S+ IP 203\.0\.113\.1:80 > 203\.0\.113\.10:\d+ TCP \[S\.\] .*  \(web1 > client\)$`)))
		Expect(r.Frames).To(ContainElement(HaveSuffix("  (web2 > client)")))
	})

	It("refuses a filter it cannot read, naming the word, before capturing", func() {
		_, stderr, code := lv("capture", "client", "eth1", "--filter", "tcp and vlan 10")
		Expect(code).To(Equal(64))
		Expect(stderr).To(ContainSubstring(`--filter: filter "tcp and vlan 10": "vlan": not a primitive lvslab reads`))
		_, stderr, code = lv("capture", "client", "eth1", "--from", "web1")
		Expect(code).To(Equal(64))
		Expect(stderr).To(ContainSubstring("--from web1: give the command to run there after --"))
	})
})
