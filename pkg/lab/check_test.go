package lab

import (
	"net/netip"
	"testing"
)

func TestDescribe(t *testing.T) {
	web := Check{From: "client", HTTP: "http://203.0.113.1/", Requests: 4}
	withCapture := web
	withCapture.Capture = &Capture{Node: "web1", Dev: "eth1", Filter: "syn"}
	arp := Check{From: "client", ARP: netip.MustParseAddr("203.0.113.1"), Dev: "eth1", Capture: &Capture{Node: "client", Dev: "eth1"}}
	for _, c := range []struct {
		c    Check
		want string
	}{
		{web, "4 HTTP requests to http://203.0.113.1/ from client"},
		{withCapture, "4 HTTP requests to http://203.0.113.1/ from client, captured on web1 eth1 (syn)"},
		{arp, "who-has 203.0.113.1 from client eth1, captured on client eth1"},
	} {
		if got := c.c.Describe(); got != c.want {
			t.Errorf("%q, want %q", got, c.want)
		}
	}
	n := 2
	for m, want := range map[*FrameMatch]string{
		{From: "director", To: "web1", Dst: netip.MustParseAddr("203.0.113.1"), Count: &n}: "director > web1, to 203.0.113.1",
		{To: Broadcast}: "any > broadcast",
		{InnerDst: netip.MustParseAddr("203.0.113.1")}: "inner to 203.0.113.1",
		{}: "any frame",
	} {
		if got := m.String(); got != want {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
