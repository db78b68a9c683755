// Package keepalived reads and writes keepalived.conf: the global_defs,
// vrrp_instance and virtual_server blocks of an LVS director, as lab types
// (lab.VRRPInstance, lab.Service) plus what only keepalived knows (health
// checks, delay_loop, sorry_server, inhibit_on_failure).
//
// The syntax is keepalived's: one keyword per line with its values, blocks in
// braces, comments from '!' or '#' to the end of the line, and values in
// double quotes where they hold blanks. Unlike keepalived, which warns about a
// keyword it does not know and goes on, Parse fails on every keyword it does
// not model, at any level (include, vrrp_script, authentication, ha_suspend,
// SSL_GET, ...): lvslab must not silently drop what it cannot reproduce. Each
// error names the file and the line, keepalived's way: "keepalived.conf:12:
// lb_algo "rrr": not a scheduler the kernel ships (rr, wrr, ...)".
package keepalived

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Config is what lvslab reads of a keepalived.conf.
type Config struct {
	RouterID       string // global_defs { router_id }; "" when not given
	VRRP           []lab.VRRPInstance
	VirtualServers []VirtualServer
}

// VirtualServer is one virtual_server block.
type VirtualServer struct {
	// Service is the IPVS service keepalived programs, with Servers in the
	// order of the real_server blocks.
	Service lab.Service
	// RealServers lists Service.Servers again, in the same order, each with
	// what keepalived keeps beside the IPVS entry. Marshal fails when the two
	// lists differ.
	RealServers []RealServer
	DelayLoop   time.Duration   // delay_loop: time between checks; 0 when not given (keepalived's default, 60 s)
	SorryServer *netip.AddrPort // sorry_server: takes the traffic while no real server is up; nil for none
}

// RealServer is one real_server block.
type RealServer struct {
	Server           lab.Server
	InhibitOnFailure bool   // inhibit_on_failure: a failed server gets weight 0 instead of leaving the table
	Check            *Check // the health check; nil for none (keepalived then counts the server as up)
}

// CheckKind is the kind of a health check, named as keepalived names its block.
type CheckKind string

// The health checks lvslab reads.
const (
	TCPCheck CheckKind = "TCP_CHECK" // a TCP connection opens
	HTTPGet  CheckKind = "HTTP_GET"  // an HTTP GET of a path answers with a status code
)

// Check is a real server's health check. A zero field was not given:
// keepalived's default applies (the real server's port, a 5 s connect
// timeout, 1 retry, 1 s between retries, any 2xx status), so Parse refuses an
// explicit 0 for each of them.
type Check struct {
	Kind             CheckKind
	ConnectPort      uint16        // connect_port
	ConnectTimeout   time.Duration // connect_timeout
	Path             string        // HTTP_GET: url { path }
	StatusCode       int           // HTTP_GET: url { status_code }
	Retry            int           // retry (nb_get_retry in older keepalived)
	DelayBeforeRetry time.Duration // delay_before_retry
}

// NewVirtualServer is the virtual server of svc with no health check and
// nothing else keepalived adds: what keepalived does with a bare IPVS table.
func NewVirtualServer(svc lab.Service) VirtualServer {
	vs := VirtualServer{Service: svc}
	for _, s := range svc.Servers {
		vs.RealServers = append(vs.RealServers, RealServer{Server: s})
	}
	return vs
}

// Error is a problem at a line of a keepalived.conf.
type Error struct {
	File string
	Line int
	Err  error
}

func (e *Error) Error() string { return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// FromNode is the keepalived.conf of a scenario's node: its VRRP instances
// and, when its keepalived section has a health check, one virtual_server per
// IPVS service with that check on every real server (without one, no
// virtual_server: lvslab holds the table itself).
func FromNode(n lab.NodeSpec) *Config {
	c := &Config{RouterID: n.Name}
	if n.Keepalived == nil {
		return c
	}
	c.VRRP = n.Keepalived.VRRP
	hc := n.Keepalived.Check
	if hc == nil {
		return c
	}
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	for _, svc := range n.Services {
		vs := NewVirtualServer(svc)
		vs.DelayLoop = sec(hc.DelayLoop)
		if hc.SorryServer.IsValid() {
			s := hc.SorryServer
			vs.SorryServer = &s
		}
		for i := range vs.RealServers {
			chk := &Check{Kind: CheckKind(hc.Kind), ConnectTimeout: sec(hc.ConnectTimeout), Retry: hc.Retry, DelayBeforeRetry: sec(hc.DelayBeforeRetry)}
			if hc.Kind == lab.CheckHTTPGet {
				chk.Path, chk.StatusCode = hc.Path, hc.StatusCode
			}
			vs.RealServers[i].Check = chk
			vs.RealServers[i].InhibitOnFailure = hc.InhibitOnFailure
		}
		c.VirtualServers = append(c.VirtualServers, vs)
	}
	return c
}
