package verify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lvslab/lvslab/internal/epoll"
)

// The plain-HTTP driver: raw non-blocking sockets on one epoll poller, up to a
// number of connections in flight (one for Get: each connection closed before
// the next is opened). In the sandbox kernel every system call and clock read
// costs about 30 µs, so it spends as few as the exchange needs: per connection
// socket (made in batches inside the node's namespace, the only call that must
// be made there), bind when the source is chosen, connect, epoll_ctl, write,
// one read when the server's answer and its FIN arrived together (most often)
// and close, and getsockname only when the kernel chose the source port.
// Deadlines are checked on a coarse tick, reading the clock once per tick.

const (
	socketBatch  = 64       // sockets made per entry into the namespace
	maxResponse  = 64 << 10 // bytes of a response read at most
	minTick      = 50 * time.Millisecond
	maxTick      = time.Second
	maxBindTries = 100 // ports taken by something else before giving up
)

// target is where a plain-HTTP run connects: the server's socket address and
// the request to send.
type target struct {
	family  int
	dst     netip.AddrPort
	request []byte
}

// plainTarget parses an http:// URL whose host is an IP address. ok is false
// for anything else (https, names), which the net/http path handles.
func plainTarget(rawURL string) (t target, ok bool) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "http" || u.User != nil {
		return t, false
	}
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil || a.Zone() != "" {
		return t, false
	}
	port := uint64(80)
	if p := u.Port(); p != "" {
		if port, err = strconv.ParseUint(p, 10, 16); err != nil {
			return t, false
		}
	}
	t.dst = netip.AddrPortFrom(a.Unmap(), uint16(port))
	t.family = unix.AF_INET
	if t.dst.Addr().Is6() {
		t.family = unix.AF_INET6
	}
	path := u.RequestURI()
	t.request = []byte("GET " + path + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: lvslab\r\nConnection: close\r\n\r\n")
	return t, true
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// exchange is one connection of a run.
type exchange struct {
	i      int // its place in the run: Result.Sequence[i], Result.Locals[i]
	fd     int
	src    netip.Addr // the source it was asked to come from (zero: the kernel's choice)
	sent   int        // bytes of the request written
	resp   []byte
	tick   int // the tick it started in
	closed bool
}

// run is one run of the plain-HTTP driver.
type run struct {
	c        HTTPClient
	t        target
	poller   *epoll.Poller
	spare    []int             // sockets made in the node, not yet used
	free     []*exchange       // finished, to use again (with their buffers)
	names    map[string]string // the names answered, each allocated once
	conns    map[int32]*exchange
	resolved map[netip.Addr]netip.Addr // the kernel's choice of source, learnt from the first connection
	res      *Result
	reader   *bufio.Reader
	tick     int
	ticks    int // ticks a request may take
	tickLen  time.Duration
	base     time.Time
	timeout  time.Duration // per request
}

// getPlain makes n requests from each of srcs (a zero address: the kernel's
// choice), with up to inflight connections at once: with one, each connection
// is read to its end and closed before the next one is opened. Connections
// start from the sources in turn; result index i is the i-th connection
// started. It returns false, doing nothing, when rawURL is not for this driver.
func (c HTTPClient) getPlain(ctx context.Context, rawURL string, srcs []netip.Addr, n, inflight int) (Result, bool) {
	t, ok := plainTarget(rawURL)
	if !ok {
		return Result{}, false
	}
	total := n * len(srcs)
	r := Result{Counts: map[string]int{}, Sequence: make([]string, total), Locals: make([]netip.AddrPort, total), Started: make([]time.Time, total)}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	ru := &run{c: c, t: t, conns: map[int32]*exchange{}, resolved: map[netip.Addr]netip.Addr{}, res: &r, names: map[string]string{},
		reader: bufio.NewReaderSize(nil, 4096), base: time.Now()}
	ru.tickLen = min(max(timeout/8, minTick), maxTick)
	ru.ticks = int((timeout + ru.tickLen - 1) / ru.tickLen)
	ru.timeout = timeout
	var errs []indexedErr
	fail := func(i int, err error) { errs = append(errs, indexedErr{i, err}) }
	if inflight > 1 {
		// Batches: see epoll.Batch.
		if restore, err := epoll.Batch(); err == nil {
			defer restore()
		}
		if ru.getRing(ctx, srcs, n, inflight, fail) {
			ru.finish(errs)
			return r, true
		}
	}
	p, err := epoll.New(ctx, max(inflight, 16))
	if err != nil {
		for i := range total {
			fail(i, err)
		}
		ru.finish(errs)
		return r, true
	}
	ru.poller = p
	defer func() {
		for _, x := range ru.conns {
			epoll.Close(x.fd)
		}
		for _, fd := range ru.spare {
			epoll.Close(fd)
		}
		p.Close()
	}()
	next := 0
	deadline := ru.base.Add(ru.tickLen)
	for next < total || len(ru.conns) > 0 {
		for next < total && len(ru.conns) < max(inflight, 1) {
			i := next
			src := srcs[i%len(srcs)]
			if inflight <= 1 {
				src = srcs[i/n] // one source after the other, as sequential runs go
			}
			x, wait, err := ru.start(i, src)
			if wait > 0 {
				if len(ru.conns) > 0 {
					break // let those finish first, then wait
				}
				if err := sleep(ctx, wait); err != nil {
					fail(i, err)
					next++
					continue
				}
				ru.clock()
				deadline = ru.base.Add(time.Duration(ru.tick+1) * ru.tickLen)
				continue
			}
			next++
			if err != nil {
				fail(i, err)
				continue
			}
			ru.conns[int32(x.fd)] = x
		}
		if len(ru.conns) == 0 {
			continue
		}
		events, err := p.Wait(deadline)
		if err != nil {
			// The context ended (or the poller broke): every request not
			// answered fails with that.
			for _, x := range ru.conns {
				fail(x.i, err)
				epoll.Close(x.fd)
			}
			ru.conns = map[int32]*exchange{}
			for ; next < total; next++ {
				fail(next, err)
			}
			break
		}
		if len(events) == 0 {
			ru.clock()
			deadline = ru.base.Add(time.Duration(ru.tick+1) * ru.tickLen)
			ru.expire(fail, timeout)
			continue
		}
		for _, ev := range events {
			x := ru.conns[ev.Fd]
			if x == nil {
				continue
			}
			done, err := ru.handle(x, ev.Events)
			if !done && err == nil {
				continue
			}
			delete(ru.conns, ev.Fd)
			if !x.closed {
				epoll.Close(x.fd)
			}
			if err == nil {
				err = ru.answer(x)
			}
			if err != nil {
				fail(x.i, err)
			}
			ru.free = append(ru.free, x)
		}
	}
	ru.finish(errs)
	return r, true
}

// expire fails the connections that have had their time.
func (ru *run) expire(fail func(int, error), timeout time.Duration) {
	for fd, x := range ru.conns {
		if ru.tick-x.tick > ru.ticks {
			fail(x.i, fmt.Errorf("no answer within %s", timeout))
			epoll.Close(x.fd)
			delete(ru.conns, fd)
		}
	}
}

type indexedErr struct {
	i   int
	err error
}

// finish records the failures, in the order of the requests.
func (ru *run) finish(errs []indexedErr) {
	failed := make(map[int]error, len(errs))
	for _, e := range errs {
		failed[e.i] = e.err
	}
	for i := range ru.res.Sequence {
		if err, ok := failed[i]; ok {
			ru.res.Sequence[i] = ""
			ru.res.Errors = append(ru.res.Errors, fmt.Errorf("request %d: %w", i+1, err))
		}
	}
}

// clock advances the tick to the time now.
func (ru *run) clock() {
	ru.tick = int(time.Since(ru.base) / ru.tickLen)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// socket returns a socket made in the client's namespace.
func (ru *run) socket() (int, error) {
	if len(ru.spare) == 0 {
		do := ru.c.From.Do
		if ru.c.From.NSPath == "" {
			do = func(fn func() error) error { return fn() } // the caller's own namespace
		}
		err := do(func() error {
			for range socketBatch {
				fd, err := unix.Socket(ru.t.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					if len(ru.spare) > 0 {
						return nil // enough to go on with
					}
					return fmt.Errorf("socket: %w", err)
				}
				ru.spare = append(ru.spare, fd)
			}
			return nil
		})
		if err != nil {
			return -1, err
		}
	}
	fd := ru.spare[len(ru.spare)-1]
	ru.spare = ru.spare[:len(ru.spare)-1]
	return fd, nil
}

// start opens connection i from src. When the next port for src may not be
// used yet, it opens nothing and says how long to wait.
func (ru *run) start(i int, src netip.Addr) (*exchange, time.Duration, error) {
	fd, err := ru.socket()
	if err != nil {
		return nil, 0, err
	}
	x := ru.newExchange(i, fd, src)
	local, wait, err := ru.bind(fd, src)
	if wait > 0 || err != nil {
		if wait > 0 {
			ru.spare = append(ru.spare, fd)
		} else {
			epoll.Close(fd)
		}
		return nil, wait, err
	}
	// One clock read per connection: the models' clocks follow it (expiry).
	ru.res.Started[i] = time.Now()
	if err := epoll.Connect(fd, ru.t.dst); err != nil && err != unix.EINPROGRESS {
		epoll.Close(fd)
		return nil, 0, fmt.Errorf("connect: %w", err)
	}
	if err := ru.poller.Add(fd, epoll.In|epoll.Out|epoll.RDHup|epoll.ET); err != nil {
		epoll.Close(fd)
		return nil, 0, err
	}
	if !local.IsValid() || local.Port() == 0 {
		sa, err := unix.Getsockname(fd)
		if err != nil {
			epoll.Close(fd)
			return nil, 0, fmt.Errorf("getsockname: %w", err)
		}
		local = addrPort(sa)
		if !src.IsValid() && ru.c.Ports != nil {
			ru.resolved[src] = local.Addr() // bind later ones to it: their address is known
		}
	}
	ru.res.Locals[i] = local
	return x, 0, nil
}

// newExchange returns connection i's exchange, one used before if there is.
func (ru *run) newExchange(i, fd int, src netip.Addr) *exchange {
	var x *exchange
	if k := len(ru.free); k > 0 {
		x, ru.free = ru.free[k-1], ru.free[:k-1]
		*x = exchange{resp: x.resp[:0]}
	} else {
		x = &exchange{}
	}
	x.i, x.fd, x.src, x.tick = i, fd, src, ru.tick
	return x
}

// bind binds fd to its source address and port, when they are chosen, and
// returns what it bound (a zero port: the kernel chooses at connect).
func (ru *run) bind(fd int, src netip.Addr) (netip.AddrPort, time.Duration, error) {
	addr := src
	if !addr.IsValid() {
		addr = ru.resolved[src]
	}
	if ru.c.Ports == nil {
		if !addr.IsValid() {
			return netip.AddrPort{}, 0, nil
		}
		if err := epoll.Bind(fd, netip.AddrPortFrom(addr, 0)); err != nil {
			return netip.AddrPort{}, 0, fmt.Errorf("bind %s: %w", addr, err)
		}
		return netip.AddrPortFrom(addr, 0), 0, nil
	}
	for tries := 0; ; tries++ {
		port, wait := ru.c.Ports.take(src)
		if wait > 0 {
			return netip.AddrPort{}, wait, nil
		}
		ap := netip.AddrPortFrom(addr, port)
		if !addr.IsValid() {
			ap = netip.AddrPortFrom(unspecified(ru.t.family), port)
		}
		err := epoll.Bind(fd, ap)
		if err == unix.EADDRINUSE && tries < maxBindTries {
			continue // taken by something else here: the next one
		}
		if err != nil {
			return netip.AddrPort{}, 0, fmt.Errorf("bind %s: %w", ap, err)
		}
		if !addr.IsValid() {
			return netip.AddrPortFrom(netip.Addr{}, port), 0, nil // the address is learnt after connect
		}
		return ap, 0, nil
	}
}

func unspecified(family int) netip.Addr {
	if family == unix.AF_INET6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// handle acts on an event of x's connection: it writes the request once the
// connection is up, and reads the answer. done is true once the server has
// closed its side and everything before that is read; x's socket is then closed.
func (ru *run) handle(x *exchange, events uint32) (done bool, err error) {
	if x.sent < len(ru.t.request) {
		if events&(epoll.Err|epoll.Hup) != 0 && events&epoll.Out == 0 {
			return false, sockErr(x.fd, "connect")
		}
		if events&epoll.Out == 0 {
			return false, nil
		}
		w, err := epoll.Write(x.fd, ru.t.request[x.sent:])
		if err == unix.EAGAIN {
			return false, nil
		}
		if err != nil {
			return false, connectErr(x.fd, err)
		}
		x.sent += w
	}
	if x.sent < len(ru.t.request) || events&(epoll.In|epoll.RDHup|epoll.Err|epoll.Hup) == 0 {
		return false, nil // nothing to read yet
	}
	for {
		if len(x.resp) == cap(x.resp) {
			if cap(x.resp) >= maxResponse {
				return false, fmt.Errorf("answer longer than %d bytes", maxResponse)
			}
			x.resp = append(x.resp, make([]byte, max(1024, cap(x.resp)))...)[:len(x.resp)]
		}
		space := x.resp[len(x.resp):cap(x.resp)]
		m, err := epoll.Read(x.fd, space)
		switch {
		case err == unix.EAGAIN:
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read: %w", err)
		case m == 0:
			return ru.close(x)
		}
		x.resp = x.resp[:len(x.resp)+m]
		if m < len(space) {
			if events&epoll.RDHup != 0 {
				// The FIN had arrived, so this read took all there is.
				return ru.close(x)
			}
			return false, nil // the rest, or the FIN, comes with the next event
		}
	}
}

func (ru *run) close(x *exchange) (bool, error) {
	x.closed = true
	if err := epoll.Close(x.fd); err != nil {
		return true, fmt.Errorf("close: %w", err)
	}
	return true, nil
}

// sockErr is the error a failed connection reports.
func sockErr(fd int, what string) error {
	e, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if e == 0 {
		return fmt.Errorf("%s: connection closed", what)
	}
	return fmt.Errorf("%s: %w", what, unix.Errno(e))
}

// connectErr names a write error that is the connect's failure as such.
func connectErr(fd int, err error) error {
	if errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ECONNRESET) ||
		errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.ETIMEDOUT) {
		return fmt.Errorf("connect: %w", err)
	}
	return fmt.Errorf("write: %w", err)
}

// answer reads the server's name from x's complete response: the first line
// of its body, which must come with 200 OK.
func (ru *run) answer(x *exchange) error {
	nb, ok := plainAnswer(x.resp)
	if !ok {
		var err error
		if nb, err = ru.answerHTTP(x.resp); err != nil {
			return err
		}
	}
	name, ok := ru.names[string(nb)] // no allocation for a name seen before
	if !ok {
		name = string(nb)
		ru.names[name] = name
	}
	ru.res.Sequence[x.i] = name
	ru.res.Counts[name]++
	return nil
}

// plainAnswer reads the answer the lab's web daemon gives without net/http:
// a 200 with a Content-Length and no Transfer-Encoding. It returns the body's
// first line, trimmed, and false for any other answer (net/http then reads it).
func plainAnswer(b []byte) ([]byte, bool) {
	if !bytes.HasPrefix(b, []byte("HTTP/1.1 200 ")) && !bytes.HasPrefix(b, []byte("HTTP/1.0 200 ")) {
		return nil, false
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		return nil, false
	}
	length := -1
	_, head, _ := bytes.Cut(b[:end], []byte("\r\n")) // after the status line
	for len(head) > 0 {
		var line []byte
		line, head, _ = bytes.Cut(head, []byte("\r\n"))
		k, v, ok := bytes.Cut(line, []byte(":"))
		switch {
		case !ok:
			return nil, false
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			return nil, false
		case bytes.EqualFold(k, []byte("Content-Length")):
			n, err := strconv.Atoi(string(bytes.TrimSpace(v)))
			if err != nil || n < 0 || length >= 0 {
				return nil, false
			}
			length = n
		}
	}
	body := b[end+4:]
	if length < 0 || len(body) != length {
		return nil, false
	}
	first, _, _ := bytes.Cut(body, []byte("\n"))
	return bytes.TrimSpace(first), true
}

// answerHTTP reads any other answer with net/http.
func (ru *run) answerHTTP(b []byte) ([]byte, error) {
	ru.reader.Reset(bytes.NewReader(b))
	resp, err := http.ReadResponse(ru.reader, nil)
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	first, _, _ := bytes.Cut(body, []byte("\n"))
	return bytes.TrimSpace(first), nil
}
