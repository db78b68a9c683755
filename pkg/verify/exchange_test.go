package verify

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/webd"
)

// webServer serves the lab's web daemon answer of node on a loopback port
// until the test ends, and returns its URL.
func webServer(t *testing.T, node string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- webd.Serve(ctx, []webd.Listener{{Node: node, Kind: webd.KindHTTP, Stream: ln}}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webd: %v", err)
		}
	})
	return url
}

// takenInOrder checks that locals came from addr on ports handed out in order
// from first on: each above the one before. The tests share the host's
// loopback with everything else on the machine, so a port something else holds
// is skipped (as the drivers do), but never more than a handful.
func takenInOrder(t *testing.T, locals []netip.AddrPort, addr netip.Addr, first int) {
	t.Helper()
	const maxSkipped = 64
	prev := first - 1
	for i, l := range locals {
		if l.Addr() != addr || int(l.Port()) <= prev || int(l.Port()) > first+i+maxSkipped {
			t.Fatalf("request %d came from %s, want %s on a port above %d and at most %d", i+1, l, addr, prev, first+i+maxSkipped)
		}
		prev = int(l.Port())
	}
}

// The plain driver, sequential: every request answered, each from its own
// port of the pool, in order, and its local address recorded.
func TestGetSequential(t *testing.T) {
	url := webServer(t, "web1")
	ports := NewSourcePorts(40000)
	r := HTTPClient{Ports: ports}.Get(context.Background(), url, 30)
	if len(r.Errors) > 0 || r.Counts["web1"] != 30 || len(r.Sequence) != 30 || len(r.Locals) != 30 {
		t.Fatalf("counts %v, %d answers, %d locals, errors %v", r.Counts, len(r.Sequence), len(r.Locals), r.Errors)
	}
	takenInOrder(t, r.Locals, netip.MustParseAddr("127.0.0.1"), 40000)
	// Without a pool the kernel chooses the port, and Locals still say which.
	r = HTTPClient{}.Get(context.Background(), url, 3)
	if len(r.Errors) > 0 || !r.Locals[0].IsValid() || r.Locals[0].Port() == 0 {
		t.Fatalf("kernel's ports: locals %v, errors %v", r.Locals, r.Errors)
	}
}

// The plain driver, concurrent, from two source addresses in turn: on
// io_uring where the kernel has it, and on epoll.
func TestGetConcurrent(t *testing.T) {
	url := webServer(t, "web2")
	srcs := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}
	for _, noRing := range []bool{false, true} {
		r := HTTPClient{Ports: NewSourcePorts(41000), noRing: noRing}.GetConcurrent(context.Background(), url, 300, 32, srcs...)
		if len(r.Errors) > 0 || r.Counts["web2"] != 600 {
			t.Fatalf("noRing %v: counts %v, errors %v", noRing, r.Counts, r.Errors)
		}
		seen := map[netip.AddrPort]bool{}
		for i, l := range r.Locals {
			if l.Addr() != srcs[i%2] || seen[l] {
				t.Fatalf("noRing %v: request %d came from %s (want %s, each address and port once)", noRing, i+1, l, srcs[i%2])
			}
			seen[l] = true
		}
	}
	// The kernel's choice of source address, learnt once.
	r := HTTPClient{Ports: NewSourcePorts(42000)}.GetConcurrent(context.Background(), url, 50, 8)
	if len(r.Errors) > 0 || r.Counts["web2"] != 50 {
		t.Fatalf("kernel's address: counts %v, errors %v", r.Counts, r.Errors)
	}
	takenInOrder(t, r.Locals, netip.MustParseAddr("127.0.0.1"), 42000)
}

// An answer longer than the first receive buffer is read on.
func TestGetConcurrentLongAnswer(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	body := "web9\n" + strings.Repeat("x", 9000)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1024)
				c.Read(buf)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}()
		}
	}()
	for _, noRing := range []bool{false, true} {
		r := HTTPClient{Ports: NewSourcePorts(43000), noRing: noRing}.GetConcurrent(context.Background(), "http://"+ln.Addr().String()+"/", 20, 4)
		if len(r.Errors) > 0 || r.Counts["web9"] != 20 {
			t.Fatalf("noRing %v: counts %v, errors %v", noRing, r.Counts, r.Errors)
		}
	}
}

func TestGetFailures(t *testing.T) {
	// Nothing listens: refused.
	ln, _ := net.Listen("tcp4", "127.0.0.1:0")
	url := "http://" + ln.Addr().String() + "/"
	ln.Close()
	for _, c := range []HTTPClient{{}, {Ports: NewSourcePorts(44000)}, {Ports: NewSourcePorts(44100), noRing: true}} {
		r := c.GetConcurrent(context.Background(), url, 5, 2)
		if len(r.Errors) != 5 || !strings.Contains(r.Errors[0].Error(), "request 1: connect: connection refused") || r.Sequence[0] != "" {
			t.Fatalf("refused (ports %v): errors %v, sequence %q", c.Ports != nil, r.Errors, r.Sequence)
		}
	}

	// A server that accepts and never answers: each request times out.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	r := HTTPClient{Timeout: 200 * time.Millisecond}.Get(context.Background(), "http://"+ln.Addr().String()+"/", 2)
	if len(r.Errors) != 2 || !strings.Contains(r.Errors[1].Error(), "request 2: no answer within 200ms") {
		t.Fatalf("silent server: errors %v", r.Errors)
	}

	for _, noRing := range []bool{false, true} {
		r = HTTPClient{Timeout: 200 * time.Millisecond, Ports: NewSourcePorts(45000), noRing: noRing}.GetConcurrent(context.Background(), "http://"+ln.Addr().String()+"/", 4, 2)
		if len(r.Errors) != 4 || !strings.Contains(r.Errors[3].Error(), "request 4: no answer within 200ms") {
			t.Fatalf("silent server, concurrent (noRing %v): errors %v", noRing, r.Errors)
		}
	}

	// A context that ends fails what is left.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r = HTTPClient{}.Get(ctx, "http://"+ln.Addr().String()+"/", 3)
	if len(r.Errors) != 3 || !strings.Contains(r.Errors[0].Error(), context.DeadlineExceeded.Error()) {
		t.Fatalf("ended context: errors %v", r.Errors)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r = HTTPClient{Ports: NewSourcePorts(46000)}.GetConcurrent(ctx, "http://"+ln.Addr().String()+"/", 50, 8)
	if len(r.Errors) != 50 || !strings.Contains(r.Errors[49].Error(), context.DeadlineExceeded.Error()) {
		t.Fatalf("ended context, concurrent: %d errors, %v", len(r.Errors), r.Errors)
	}
}

// Names and https go through net/http: not for the plain driver.
func TestPlainTarget(t *testing.T) {
	for url, ok := range map[string]bool{
		"http://203.0.113.1/":         true,
		"http://203.0.113.1:8080/x?y": true,
		"http://[2001:db8:1::1]/":     true,
		"https://203.0.113.1/":        false,
		"http://example.org/":         false,
		"http://user@203.0.113.1/":    false,
		"http://203.0.113.1:99999/":   false,
	} {
		tg, got := plainTarget(url)
		if got != ok {
			t.Errorf("plainTarget(%q) ok = %v, want %v", url, got, ok)
		}
		if url == "http://203.0.113.1:8080/x?y" && (tg.dst.String() != "203.0.113.1:8080" || !strings.HasPrefix(string(tg.request), "GET /x?y HTTP/1.1\r\nHost: 203.0.113.1:8080\r\n")) {
			t.Errorf("target %v %q", tg.dst, tg.request)
		}
	}
}

// The web daemon's answer is read without net/http; anything else falls back
// to it, and says the same.
func TestPlainAnswer(t *testing.T) {
	ru := &run{res: &Result{Counts: map[string]int{}, Sequence: make([]string, 1)}, names: map[string]string{}, reader: bufio.NewReader(nil)}
	for _, c := range []struct {
		resp, name string
		fast       bool
		err        string
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Served-By: web1\r\n\r\nweb1\n", "web1", true, ""},
		{"HTTP/1.0 200 OK\r\ncontent-length: 12\r\n\r\n  web2 \nmore", "web2", true, ""},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nweb3\n\r\n0\r\n\r\n", "web3", false, ""},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nweb4\n", "web4", false, ""},
		{"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", "", false, "status 503 Service Unavailable"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nweb1\n", "", false, "answer: unexpected EOF"},
	} {
		_, fast := plainAnswer([]byte(c.resp))
		err := ru.answer(&exchange{resp: []byte(c.resp)})
		if fast != c.fast || (err == nil) != (c.err == "") || (err != nil && err.Error() != c.err) || (err == nil && ru.res.Sequence[0] != c.name) {
			t.Errorf("%q: fast %v, answer %q, error %v; want %v %q %q", c.resp, fast, ru.res.Sequence[0], err, c.fast, c.name, c.err)
		}
	}
}
