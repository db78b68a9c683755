package verify

import (
	"strings"
	"testing"
	"time"
)

func TestARPProbeConclusive(t *testing.T) {
	ms := time.Millisecond
	reply := func(after time.Duration) ARPReply { return ARPReply{ARP: ARP{Op: 2}, After: after} }
	for _, c := range []struct {
		name  string
		probe ARPProbe
		fails string // "" when conclusive
	}{
		{"silence for the whole window", ARPProbe{Window: 300 * ms, Listened: 301 * ms}, ""},
		{"replies well inside the window", ARPProbe{Replies: []ARPReply{reply(ms / 5), reply(3 * ms)}, Window: 300 * ms, Listened: 300 * ms}, ""},
		{"stopped early (its context ended)", ARPProbe{Window: 300 * ms, Listened: 120 * ms}, "listened 120ms of its 300ms window"},
		{"a reply too slow for the margin", ARPProbe{Replies: []ARPReply{reply(ms), reply(31 * ms)}, Window: 300 * ms, Listened: 300 * ms}, "took 31ms, more than 1/10"},
	} {
		err := c.probe.Conclusive()
		switch {
		case c.fails == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.fails != "" && (err == nil || !strings.Contains(err.Error(), c.fails)):
			t.Errorf("%s: %v, want an error with %q", c.name, err, c.fails)
		}
	}
}
