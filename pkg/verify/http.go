// Package verify drives clients through a running lab and observes the result:
// which real server answered each request, counted per server.
package verify

import (
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
	From    node.Node
	Source  netip.Addr    // source address; the kernel's choice when zero
	Timeout time.Duration // per request; 5s when zero
}

// Result is the outcome of a series of requests.
type Result struct {
	Sequence []string       // the server that answered each request, in order ("" for a failure)
	Counts   map[string]int // answers per server
	Errors   []error        // one per failed request
}

// First returns the first index where r.Sequence differs from want, or -1.
func (r Result) First(want []string) int {
	for i := range max(len(want), len(r.Sequence)) {
		if i >= len(want) || i >= len(r.Sequence) || want[i] != r.Sequence[i] {
			return i
		}
	}
	return -1
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

func (c HTTPClient) transport() *http.Transport {
	return &http.Transport{
		DisableKeepAlives: true,
		// The lab's HTTPS servers use a certificate made at start, signed by nobody.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			var conn net.Conn
			err := c.From.Do(func() error {
				var err error
				d := &net.Dialer{}
				if c.Source.IsValid() {
					d.LocalAddr = &net.TCPAddr{IP: c.Source.AsSlice()}
				}
				conn, err = d.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}
}

// Get requests url n times sequentially, each on a new connection, and records
// which server answered (the body's first line).
func (c HTTPClient) Get(ctx context.Context, url string, n int) Result {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	client := &http.Client{Transport: c.transport(), Timeout: timeout}
	defer client.CloseIdleConnections()
	r := Result{Counts: map[string]int{}}
	for i := range n {
		name, err := getOnce(ctx, client, url)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("request %d: %w", i+1, err))
		} else {
			r.Counts[name]++
		}
		r.Sequence = append(r.Sequence, name)
	}
	return r
}

func getOnce(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	name, _, _ := strings.Cut(string(body), "\n")
	return strings.TrimSpace(name), nil
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
