package verify

import (
	"net/netip"
	"testing"
	"time"
)

// Each source address goes through the whole range on its own; a port comes
// back for an address only when its block was left reuseAfter ago.
func TestSourcePorts(t *testing.T) {
	now := time.Unix(1000, 0)
	p := NewSourcePorts(firstPort + 10)
	p.now = func() time.Time { return now }
	a, b := netip.MustParseAddr("203.0.113.100"), netip.MustParseAddr("203.0.113.101")
	take := func(src netip.Addr) uint16 {
		t.Helper()
		port, wait := p.take(src)
		if wait != 0 {
			t.Fatalf("take(%s): wait %s, want a port", src, wait)
		}
		return port
	}
	if x, y := take(a), take(b); x != firstPort+10 || y != firstPort+10 {
		t.Fatalf("first ports %d %d, want %d for each address", x, y, firstPort+10)
	}
	// The rest of the range for a, up to the range's first block again, which
	// it left (at its end) a moment ago: it waits.
	for i := 1; i < numPorts-10; i++ {
		take(a)
	}
	port, wait := p.take(a)
	if port != 0 || wait != reuseAfter {
		t.Fatalf("the first block again at once: port %d, wait %s; want to wait %s", port, wait, reuseAfter)
	}
	now = now.Add(reuseAfter)
	if got := take(a); got != firstPort {
		t.Fatalf("after the wait: %d, want %d", got, firstPort)
	}
	for i := 1; i < portBlock; i++ {
		take(a)
	}
	if got := take(a); got != firstPort+portBlock {
		t.Fatalf("the next block: %d, want %d", got, firstPort+portBlock)
	}
	// b went on unaffected.
	if got := take(b); got != firstPort+11 {
		t.Fatalf("b: %d, want %d", got, firstPort+11)
	}
}
