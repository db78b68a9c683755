// Package verify drives clients through a running lab and observes the result:
// which real server answered each request, counted per server.
package verify

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
)

// HTTPClient makes HTTP requests from inside a node's namespace, one request per
// TCP connection (a fresh source port each time), as the lab's curl does.
type HTTPClient struct {
	From    node.Node     // the sending node; for plain http:// URLs, the zero Node sends from the caller's namespace
	Source  netip.Addr    // source address; the kernel's choice when zero
	Ports   *SourcePorts  // source ports, each used once; the kernel's choice when nil
	Timeout time.Duration // per request; 5s when zero

	noRing bool // tests: drive concurrent runs with epoll even where io_uring is
}

// Result is the outcome of a series of requests.
type Result struct {
	Sequence []string         // the server that answered each request, in order ("" for a failure)
	Counts   map[string]int   // answers per server
	Errors   []error          // one per failed request
	Locals   []netip.AddrPort // each request's client address and port (zero when it failed before connecting)
	Started  []time.Time      // when each request's connection was opened
}

// Servers returns the servers that answered, sorted.
func (r Result) Servers() []string {
	var s []string
	for k := range r.Counts {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// Get requests url n times sequentially and records which server answered (the
// body's first line). Each request has its own connection, and that connection
// is read to its end (the server's close) and closed before the next one is
// opened, so the director sees it closed before it schedules the next: net/http
// closes connections asynchronously, which would let a new connection reach
// the director while the previous one still counts as active there. Plain
// http:// URLs to an IP address go through lvslab's own lean driver
// (exchange.go); others (https, names) through net/http and crypto/tls.
func (c HTTPClient) Get(ctx context.Context, url string, n int) Result {
	if r, ok := c.getPlain(ctx, url, []netip.Addr{c.Source}, n, 1); ok {
		return r
	}
	r := Result{Counts: map[string]int{}}
	c.getSequential(ctx, url, n, &r)
	return r
}

// GetConcurrent requests url n times from each of sources (c.Source when none
// is given), with up to concurrency connections in flight, for checks that
// count answers only: the order in which the director schedules them is not
// the order they were started in. Each request still has its own connection,
// from a fresh port of c.Ports. Result index i is the i-th connection started;
// connections start from the sources in turn. Only plain http:// URLs to an IP
// address are driven concurrently; others are sent one after the other.
func (c HTTPClient) GetConcurrent(ctx context.Context, url string, n, concurrency int, sources ...netip.Addr) Result {
	if len(sources) == 0 {
		sources = []netip.Addr{c.Source}
	}
	if r, ok := c.getPlain(ctx, url, sources, n, concurrency); ok {
		return r
	}
	r := Result{Counts: map[string]int{}}
	for _, src := range sources {
		cc := c
		cc.Source = src
		cc.getSequential(ctx, url, n, &r)
	}
	return r
}

// getSequential is Get through net/http (https, host names): it adds n
// requests to r.
func (c HTTPClient) getSequential(ctx context.Context, url string, n int, r *Result) {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	for range n {
		r.Started = append(r.Started, time.Now())
		name, local, err := c.once(ctx, url, timeout)
		r.Locals = append(r.Locals, local)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("request %d: %w", len(r.Sequence)+1, err))
			name = ""
		} else {
			r.Counts[name]++
		}
		r.Sequence = append(r.Sequence, name)
	}
}

func (c HTTPClient) once(ctx context.Context, rawURL string, timeout time.Duration) (name string, local netip.AddrPort, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return "", local, err
	}
	req.Close = true
	req.Header.Set("User-Agent", "lvslab")
	addr := req.URL.Host
	if req.URL.Port() == "" {
		addr = net.JoinHostPort(req.URL.Hostname(), map[string]string{"http": "80", "https": "443"}[req.URL.Scheme])
	}
	conn, err := dial(ctx, c.From, "tcp", c.Source, c.Ports, addr)
	if err != nil {
		return "", local, err
	}
	defer conn.Close()
	if a, ok := conn.LocalAddr().(*net.TCPAddr); ok {
		local = a.AddrPort()
		local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if req.URL.Scheme == "https" {
		// The lab's HTTPS servers use a certificate made at start, signed by nobody.
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: req.URL.Hostname()})
		if err := tc.HandshakeContext(ctx); err != nil {
			return "", local, err
		}
		conn = tc
	}
	if err := req.Write(conn); err != nil {
		return "", local, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return "", local, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return "", local, err
	}
	_, _ = io.Copy(io.Discard, br) // to the server's close: the exchange is over
	if err := conn.Close(); err != nil {
		return "", local, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", local, fmt.Errorf("status %s", resp.Status)
	}
	name, _, _ = strings.Cut(string(body), "\n")
	return strings.TrimSpace(name), local, nil
}

// URL is the HTTP URL of a virtual service address (HTTPS for port 443).
func URL(a netip.AddrPort) string {
	scheme, def := "http", uint16(80)
	if a.Port() == 443 {
		scheme, def = "https", 443
	}
	if a.Port() == def {
		if a.Addr().Is6() {
			return scheme + "://[" + a.Addr().String() + "]/"
		}
		return scheme + "://" + a.Addr().String() + "/"
	}
	return scheme + "://" + a.String() + "/"
}

// FirstDivergence returns the first index where got differs from want, or -1.
func FirstDivergence(want, got []string) int {
	for i := range max(len(want), len(got)) {
		if i >= len(want) || i >= len(got) || want[i] != got[i] {
			return i
		}
	}
	return -1
}
