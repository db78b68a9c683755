package lab

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// CheckKind is what a check sends.
type CheckKind string

// Check kinds.
const (
	CheckHTTP CheckKind = "http"
	CheckUDP  CheckKind = "udp"
	CheckARP  CheckKind = "arp"
)

// Driver is the program that makes a check's HTTP requests.
type Driver string

// Drivers.
const (
	DriverGo   Driver = "go"   // lvslab's own client: one process, fast
	DriverCurl Driver = "curl" // the real curl binary, as the lab uses it
)

// ParseDriver reads go or curl.
func ParseDriver(s string) (Driver, error) {
	switch d := Driver(s); d {
	case DriverGo, DriverCurl:
		return d, nil
	}
	return "", fmt.Errorf("%q: want go or curl", s)
}

// Check is one check of a scenario, run by lvslab verify.
type Check struct {
	Name     string
	From     string // the node that sends; "client" by default
	HTTP     string // URL (http:// or https://)
	UDP      netip.AddrPort
	ARP      netip.Addr // who-has target
	Dev      string     // the interface ARP probes and extra sources use; eth1 by default
	Requests int        // per source address
	Sources  int        // extra client addresses, each making Requests requests
	Hold     int        // HTTP: the check's first Hold connections stay open (established) while the rest run
	// Concurrency is how many HTTP connections are in flight at once, from all
	// sources together; 0 or 1: one after the other, each closed before the
	// next opens. With more, the director schedules them in no set order, so
	// only counts can be judged: a sequence or stickiness cannot, and the
	// model's prediction is compared as counts.
	Concurrency int
	Expect      Expect
	// Points is what the check is worth when lvslab grade grades a lab
	// (1 when not given); Hint is shown to a student whose lab fails it.
	Points int
	Hint   string
	// Capture, when set, records one interface's frames while the check
	// sends; Expect.Frames judges them, and the outcome shows them.
	Capture *Capture
}

// Capture is where a check records frames: a node's interface, and which of
// its frames to keep (the filter language of lvslab capture; empty: all).
type Capture struct {
	Node   string
	Dev    string
	Filter string
}

// Broadcast is what a FrameMatch's To names for the Ethernet broadcast address.
const Broadcast = "broadcast"

// FrameMatch describes frames a check's capture must hold. Every field given
// must match: From and To name the nodes whose MACs are the frame's Ethernet
// source and destination (To may be Broadcast); Src and Dst are its IP addresses (the outer
// header's, or ARP's sender and target); InnerSrc and InnerDst those of the
// packet an IP-in-IP frame carries. Count is how many frames match exactly;
// nil means at least one.
type FrameMatch struct {
	From, To           string
	Src, Dst           netip.Addr
	InnerSrc, InnerDst netip.Addr
	Count              *int
}

// String says which frames the match describes: "director > web1, to
// 203.0.113.1".
func (m FrameMatch) String() string {
	var parts []string
	if m.From != "" || m.To != "" {
		parts = append(parts, fmt.Sprintf("%s > %s", orAny(m.From), orAny(m.To)))
	}
	ip := func(what string, a netip.Addr) {
		if a.IsValid() {
			parts = append(parts, what+" "+a.String())
		}
	}
	ip("from", m.Src)
	ip("to", m.Dst)
	ip("inner from", m.InnerSrc)
	ip("inner to", m.InnerDst)
	if len(parts) == 0 {
		return "any frame"
	}
	return strings.Join(parts, ", ")
}

func orAny(node string) string {
	if node == "" {
		return "any"
	}
	return node
}

// Kind names what the check sends.
func (c Check) Kind() CheckKind {
	switch {
	case c.HTTP != "":
		return CheckHTTP
	case c.UDP.IsValid():
		return CheckUDP
	}
	return CheckARP
}

// MaxConcurrency is the most connections a check may have in flight.
const MaxConcurrency = 1000

// Expect is what a check must observe.
type Expect struct {
	Model     bool           // the exact sequence the scheduler's model predicts
	Sequence  []string       // an exact sequence of servers
	Counts    map[string]int // answers per server
	Sticky    bool           // each source address always gets one server
	Servers   []string       // answers only from these servers
	Answerers []string       // ARP: exactly these nodes answer
	Failures  int            // requests that must fail (default 0)
	Frames    []FrameMatch   // what the check's capture must hold
}

// Destination is where an HTTP or UDP check sends to: its URL's address and
// port (80, or 443 for https, by default) or its UDP address. It is false for
// an ARP check and for a URL whose host is a name.
func (c Check) Destination() (netip.AddrPort, bool) {
	switch c.Kind() {
	case CheckUDP:
		return c.UDP, true
	case CheckHTTP:
		u, err := url.Parse(c.HTTP)
		if err != nil {
			return netip.AddrPort{}, false
		}
		a, err := netip.ParseAddr(u.Hostname())
		if err != nil {
			return netip.AddrPort{}, false
		}
		port := uint64(80)
		if u.Scheme == "https" {
			port = 443
		}
		if p := u.Port(); p != "" {
			if port, err = strconv.ParseUint(p, 10, 16); err != nil {
				return netip.AddrPort{}, false
			}
		}
		return netip.AddrPortFrom(a.Unmap(), uint16(port)), true
	}
	return netip.AddrPort{}, false
}

// Describe says in a few words what the check sends, and where it captures.
func (c Check) Describe() string {
	d := c.describeSend()
	if cp := c.Capture; cp != nil {
		d += fmt.Sprintf(", captured on %s %s", cp.Node, cp.Dev)
		if cp.Filter != "" {
			d += fmt.Sprintf(" (%s)", cp.Filter)
		}
	}
	return d
}

func (c Check) describeSend() string {
	src := c.From
	if c.Sources > 0 {
		src = fmt.Sprintf("%s (%d source addresses)", c.From, c.Sources)
	}
	switch c.Kind() {
	case CheckHTTP:
		d := fmt.Sprintf("%d %s requests to %s from %s", c.Requests, strings.ToUpper(strings.SplitN(c.HTTP, ":", 2)[0]), c.HTTP, src)
		if c.Hold > 0 {
			d += fmt.Sprintf(" (the first %d held open)", c.Hold)
		}
		if c.Concurrency > 1 {
			d += fmt.Sprintf(", %d at a time", c.Concurrency)
		}
		return d
	case CheckUDP:
		return fmt.Sprintf("%d UDP datagrams to %s from %s", c.Requests, c.UDP, src)
	}
	return fmt.Sprintf("who-has %s from %s %s", c.ARP, c.From, c.Dev)
}
