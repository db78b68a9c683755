package webd

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// servePlainOn serves the HTTP answer of node on a loopback port until the
// test ends, and returns its address.
func servePlainOn(t *testing.T, node string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- servePlain(ctx, []Listener{{Node: node, Kind: KindHTTP, Stream: ln}}, &Faults{}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("servePlain: %v", err)
		}
	})
	return addr
}

// exchange sends raw bytes and returns everything the server sent back before
// it closed the connection.
func exchange(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	return string(b)
}

func TestPlainAnswers(t *testing.T) {
	addr := servePlainOn(t, "web1")
	resp, err := http.Get("http://" + addr + "/any/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "web1\n" || resp.Header.Get("X-Served-By") != "web1" ||
		resp.Header.Get("Date") == "" || !resp.Close {
		t.Fatalf("GET: %s %q %v close=%v", resp.Status, body, resp.Header, resp.Close)
	}

	head := exchange(t, addr, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(head, "\r\n\r\n") || !strings.Contains(head, "Content-Length: 5\r\n") {
		t.Fatalf("HEAD answered %q", head)
	}

	post := exchange(t, addr, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
	if !strings.HasPrefix(post, "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(post, "\r\n\r\nweb1\n") {
		t.Fatalf("POST answered %q", post)
	}

	page := exchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\nAccept: text/html,application/xhtml+xml,*/*;q=0.8\r\n\r\n")
	if !strings.Contains(page, "Content-Type: text/html; charset=utf-8\r\n") || !strings.Contains(page, `<link rel="icon" href="data:,">`) ||
		!strings.Contains(page, `<h1 id="server">web1</h1>`) || !strings.Contains(page, "X-Served-By: web1\r\n") {
		t.Fatalf("a browser's GET answered %q", page)
	}

	bad := exchange(t, addr, "NOT HTTP\r\n\r\n")
	if !strings.HasPrefix(bad, "HTTP/1.1 400 Bad Request\r\n") {
		t.Fatalf("garbage answered %q", bad)
	}
}

// A request sent in pieces is answered once it is complete.
func TestPlainRequestInPieces(t *testing.T) {
	addr := servePlainOn(t, "web2")
	c, err := net.Dial("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, piece := range []string{"GET / HT", "TP/1.1\r\nHost:", " x\r\n", "\r\n"} {
		io.WriteString(c, piece)
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "web2\n" {
		t.Fatalf("answered %q", body)
	}
}

func TestPlainManyClients(t *testing.T) {
	addr := servePlainOn(t, "web3")
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get("http://" + addr + "/")
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// The daemon opens the sockets EnvListen names itself (inside a container,
// where none can be handed over), and says which item of it is wrong.
func TestListen(t *testing.T) {
	ls, err := Listen("web1/http/0,web1/udp/0")
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 2 || ls[0].Stream == nil || ls[1].Packet == nil || ls[0].Node != "web1" || ls[1].Kind != KindUDP {
		t.Fatalf("listeners %+v", ls)
	}
	for _, l := range ls {
		l.close()
	}
	for spec, want := range map[string]string{
		"web1/http":        `"web1/http" is not node/kind/port`,
		"web1/http/eighty": `"web1/http/eighty": port`,
		"web1/ftp/21":      `web1/ftp/21: unknown kind "ftp"`,
	} {
		if _, err := Listen(spec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Listen(%q) = %v, want an error with %q", spec, err, want)
		}
	}
}

// A step faults a real server: 500s, then no answer at all, then answers again.
func TestFaults(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Faults{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeFaults(ctx, []Listener{{Node: "web1", Kind: KindHTTP, Stream: ln}}, f) }()
	defer func() { cancel(); <-done }()
	url := "http://" + ln.Addr().String() + "/"
	get := func() (int, error) {
		c := &http.Client{Timeout: 300 * time.Millisecond}
		r, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		defer r.Body.Close()
		io.Copy(io.Discard, r.Body)
		return r.StatusCode, nil
	}
	if code, err := get(); code != 200 || err != nil {
		t.Fatalf("ok: %d %v", code, err)
	}
	f.Set(ModeError)
	if code, err := get(); code != 500 || err != nil {
		t.Fatalf("error mode: %d %v", code, err)
	}
	f.Set(ModeStall)
	if code, err := get(); err == nil {
		t.Fatalf("stall mode answered %d", code)
	}
	f.Set(ModeOK)
	if code, err := get(); code != 200 || err != nil {
		t.Fatalf("ok again: %d %v", code, err)
	}
}
