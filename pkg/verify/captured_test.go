package verify

import (
	"net"
	"net/netip"
	"reflect"
	"testing"

	"github.com/lvslab/lvslab/pkg/capture"
	"github.com/lvslab/lvslab/pkg/lab"
)

func TestJudgeFrames(t *testing.T) {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	a := netip.MustParseAddr
	owners := map[string]string{"02:00:00:00:00:01": "director", "02:00:00:00:00:0b": "web1", "02:00:00:00:00:0a": "client", broadcastMAC: lab.Broadcast}
	who := capture.Header{SrcMAC: mac("02:00:00:00:00:0a"), DstMAC: mac(broadcastMAC), Src: a("203.0.113.10"), Dst: a("203.0.113.1")}
	dr := capture.Header{SrcMAC: mac("02:00:00:00:00:01"), DstMAC: mac("02:00:00:00:00:0b"), Src: a("203.0.113.10"), Dst: a("203.0.113.1")}
	reply := capture.Header{SrcMAC: mac("02:00:00:00:00:0b"), DstMAC: mac("02:00:00:00:00:0a"), Src: a("203.0.113.1"), Dst: a("203.0.113.10")}
	tun := capture.Header{SrcMAC: mac("02:00:00:00:00:01"), DstMAC: mac("02:00:00:00:00:0b"), Src: a("203.0.113.2"), Dst: a("203.0.113.11"),
		InnerSrc: a("203.0.113.10"), InnerDst: a("203.0.113.1")}
	got := []capture.Header{dr, reply, dr, tun, who}
	n := func(i int) *int { return &i }
	for _, c := range []struct {
		want []lab.FrameMatch
		msgs []string
	}{
		{[]lab.FrameMatch{{From: "director", To: "web1", Dst: a("203.0.113.1"), Count: n(2)}}, nil},
		{[]lab.FrameMatch{{From: "web1", To: "client", Src: a("203.0.113.1")}}, nil},
		{[]lab.FrameMatch{{From: "director", To: "web1", Dst: a("203.0.113.11"), InnerDst: a("203.0.113.1"), Count: n(1)}}, nil},
		{[]lab.FrameMatch{{From: "web1", To: "director", Count: n(0)}}, nil},
		{[]lab.FrameMatch{{From: "client", To: lab.Broadcast, Dst: a("203.0.113.1"), Count: n(1)}}, nil},
		{[]lab.FrameMatch{{From: "director", To: "web1", Count: n(2)}}, []string{"3 frames director > web1, expected 2"}},
		{[]lab.FrameMatch{{From: "web1", To: "director"}, {Src: a("198.51.100.1")}},
			[]string{"no frame web1 > director in the capture (5 frames)", "no frame from 198.51.100.1 in the capture (5 frames)"}},
		{[]lab.FrameMatch{{To: "web1", InnerSrc: a("203.0.113.10"), Count: n(0)}}, []string{"1 frame any > web1, inner from 203.0.113.10, expected 0"}},
	} {
		if msgs := JudgeFrames(c.want, got, owners); !reflect.DeepEqual(msgs, c.msgs) {
			t.Errorf("%v: %q, want %q", c.want, msgs, c.msgs)
		}
	}
}
