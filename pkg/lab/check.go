package lab

import (
	"fmt"
	"net/netip"
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
	Expect   Expect
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

// Expect is what a check must observe.
type Expect struct {
	Model     bool           // the exact sequence the scheduler's model predicts
	Sequence  []string       // an exact sequence of servers
	Counts    map[string]int // answers per server
	Sticky    bool           // each source address always gets one server
	Servers   []string       // answers only from these servers
	Answerers []string       // ARP: exactly these nodes answer
	Failures  int            // requests that must fail (default 0)
}

// Describe says in a few words what the check sends.
func (c Check) Describe() string {
	src := c.From
	if c.Sources > 0 {
		src = fmt.Sprintf("%s (%d source addresses)", c.From, c.Sources)
	}
	switch c.Kind() {
	case CheckHTTP:
		held := ""
		if c.Hold > 0 {
			held = fmt.Sprintf(" (the first %d held open)", c.Hold)
		}
		return fmt.Sprintf("%d %s requests to %s from %s%s", c.Requests, strings.ToUpper(strings.SplitN(c.HTTP, ":", 2)[0]), c.HTTP, src, held)
	case CheckUDP:
		return fmt.Sprintf("%d UDP datagrams to %s from %s", c.Requests, c.UDP, src)
	}
	return fmt.Sprintf("who-has %s from %s %s", c.ARP, c.From, c.Dev)
}
