package webd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lvslab/lvslab/internal/epoll"
)

// The plain-HTTP server: every HTTP listener of the daemon on one epoll
// poller, in one goroutine. In the sandbox kernel a system call or a clock
// read costs about 30 µs, and net/http's server spends some forty on a
// request (keep-alive and no-delay options and an address look-up per
// connection, its registration with Go's poller and removal, deadlines, the
// Date header); this one spends accept, read, write and close, and the clock
// once a second. HTTPS stays with net/http.

const (
	headerTimeout = 10 * time.Second // as net/http's ReadHeaderTimeout was
	maxRequest    = 64 << 10         // header and body bytes read at most
	plainTick     = time.Second      // the clock's resolution here
)

// plainSite is one HTTP listener and the node it answers for.
type plainSite struct {
	fd   int
	name string
	ok   []byte // the 200 answer under the current date
	head []byte // the same without its body, for HEAD
	date string
	// html is the answer to a browser (Accept: text/html), under htmlDate.
	html     []byte
	htmlDate string
}

// plainConn is a connection waiting for its request or for room to write.
type plainConn struct {
	fd    int
	site  *plainSite
	req   []byte
	out   []byte // the answer still to write
	since int    // the tick it was accepted in
	// waitOut: the answer did not fit in the socket's buffer; wait for room.
	waitOut bool
}

// events are the events c waits for: its request (and its client's FIN), and
// room to write once it ran out of it. Watching for room from the start would
// wake the server for every new connection, which has room at once.
func (c *plainConn) events() uint32 {
	ev := uint32(epoll.In | epoll.RDHup | epoll.ET)
	if c.waitOut {
		ev |= epoll.Out
	}
	return ev
}

type plainServer struct {
	poller *epoll.Poller
	sites  map[int32]*plainSite // by listening descriptor
	conns  map[int32]*plainConn
	reader *bufio.Reader
	base   time.Time
	tick   int
	date   string
	faults *Faults
}

// servePlain answers HTTP on each listener with its node's name until ctx
// ends. It takes the listeners' sockets over (and closes them).
func servePlain(ctx context.Context, ls []Listener, f *Faults) error {
	s := &plainServer{sites: map[int32]*plainSite{}, conns: map[int32]*plainConn{},
		reader: bufio.NewReaderSize(nil, 4096), base: time.Now(), faults: f}
	s.date = s.base.UTC().Format(http.TimeFormat)
	p, err := epoll.New(ctx, 256)
	if err != nil {
		return fmt.Errorf("webd: %w", err)
	}
	s.poller = p
	defer func() {
		for _, c := range s.conns {
			epoll.Close(c.fd)
		}
		for _, site := range s.sites {
			epoll.Close(site.fd)
		}
		p.Close()
	}()
	for _, l := range ls {
		fd, err := takeFD(l.Stream)
		if err != nil {
			return fmt.Errorf("webd %s http on %s: %w", l.Node, l.Stream.Addr(), err)
		}
		site := &plainSite{fd: fd, name: l.Node}
		s.sites[int32(fd)] = site
		if err := p.Add(fd, epoll.In|epoll.ET); err != nil {
			return fmt.Errorf("webd %s http: %w", l.Node, err)
		}
		s.accept(site) // what came before it was watched
	}
	deadline := s.base.Add(plainTick)
	for {
		events, err := p.Wait(deadline)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("webd: %w", err)
		}
		if len(events) == 0 {
			now := time.Now()
			s.tick = int(now.Sub(s.base) / plainTick)
			s.date = now.UTC().Format(http.TimeFormat)
			deadline = s.base.Add(time.Duration(s.tick+1) * plainTick)
			for fd, c := range s.conns {
				if time.Duration(s.tick-c.since)*plainTick > headerTimeout {
					epoll.Close(c.fd)
					delete(s.conns, fd)
				}
			}
			continue
		}
		for _, ev := range events {
			if site := s.sites[ev.Fd]; site != nil {
				s.accept(site)
				continue
			}
			if c := s.conns[ev.Fd]; c != nil && s.serve(c) {
				epoll.Close(c.fd)
				delete(s.conns, ev.Fd)
			}
		}
	}
}

// takeFD takes a listener's socket over: a duplicate of it (non-blocking, as
// the listener's is), the listener itself closed.
func takeFD(l net.Listener) (int, error) {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return -1, errNotTCP
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	if dupErr != nil {
		return -1, dupErr
	}
	if err := tl.Close(); err != nil {
		epoll.Close(fd)
		return -1, err
	}
	return fd, nil
}

// accept takes every connection waiting on site and serves those whose
// request is already there; the others wait on the poller.
func (s *plainServer) accept(site *plainSite) {
	for {
		fd, err := epoll.Accept(site.fd)
		switch {
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err != nil:
			return // EAGAIN: all taken; anything else: the next event retries
		}
		// Its request is most often there already: the daemon runs under
		// SCHED_BATCH (Main), so it runs once its clients have sent what they
		// could. Then this read spares the connection's epoll_ctl.
		c := &plainConn{fd: fd, site: site, since: s.tick}
		if s.serve(c) {
			epoll.Close(fd)
			continue
		}
		if err := s.poller.Add(fd, c.events()); err != nil {
			epoll.Close(fd)
			continue
		}
		s.conns[int32(fd)] = c
	}
}

// serve reads what c's client sent and, once the request is complete, writes
// the answer. It returns true when c is done with and must be closed.
func (s *plainServer) serve(c *plainConn) (done bool) {
	if c.out == nil {
		var buf [4096]byte
		for {
			n, err := epoll.Read(c.fd, buf[:])
			if err == unix.EAGAIN {
				return false
			}
			if err != nil || n == 0 {
				return true // gone before asking (or a held connection let go)
			}
			c.req = append(c.req, buf[:n]...)
			if complete, answer := s.answer(c); complete {
				c.out = answer
				break
			}
			if n < len(buf) {
				return false
			}
		}
	}
	for len(c.out) > 0 {
		n, err := epoll.Write(c.fd, c.out)
		if err == unix.EAGAIN {
			if !c.waitOut {
				// No room (never seen with answers this short): wait for it.
				c.waitOut = true
				if _, known := s.conns[int32(c.fd)]; known {
					return s.poller.Modify(c.fd, c.events()) != nil
				}
			}
			return false
		}
		if err != nil {
			return true
		}
		c.out = c.out[n:]
	}
	return true
}

// answer parses c's request so far: when it is complete (or cannot be), it
// returns the answer to send.
func (s *plainServer) answer(c *plainConn) (complete bool, answer []byte) {
	end := bytes.Index(c.req, []byte("\r\n\r\n"))
	if end < 0 {
		if len(c.req) > maxRequest {
			return true, []byte("HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large")
		}
		return false, nil
	}
	s.reader.Reset(bytes.NewReader(c.req))
	req, err := http.ReadRequest(s.reader)
	if err != nil {
		return true, []byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request")
	}
	// A body is read before answering (closing on unread data would reset the
	// connection and could lose the answer).
	if body := end + 4 + int(max(req.ContentLength, 0)); len(c.req) < body && body <= maxRequest {
		return false, nil
	}
	switch s.faults.Mode() {
	case ModeError:
		return true, []byte("HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\nX-Served-By: " + c.site.name +
			"\r\nConnection: close\r\nContent-Length: 40\r\n\r\n500 Internal Server Error (lvslab fault)")
	case ModeStall:
		return false, nil // read, never answered (closed after headerTimeout)
	}
	site := c.site
	if site.date != s.date || site.ok == nil {
		site.date = s.date
		body := site.name + "\n"
		head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) +
			"\r\nContent-Type: text/plain; charset=utf-8\r\nDate: " + s.date +
			"\r\nX-Served-By: " + site.name + "\r\nConnection: close\r\n\r\n"
		site.head = []byte(head)
		site.ok = []byte(head + body)
	}
	if req.Method == http.MethodHead {
		return true, site.head
	}
	if strings.Contains(req.Header.Get("Accept"), "text/html") {
		return true, site.page(s.date)
	}
	return true, site.ok
}

// page is the answer to a browser: the node's name as an HTML page that asks
// for no icon, so that one reload is one connection and round robin shows
// (a browser asks for /favicon.ico on a connection of its own, which would
// take every other turn).
func (site *plainSite) page(date string) []byte {
	if site.html == nil || site.htmlDate != date {
		name := html.EscapeString(site.name)
		body := `<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>` + name +
			`</title></head><body><h1 id="server">` + name + `</h1><p>served by ` + name + ` (lvslab)</p></body></html>` + "\n"
		site.html = []byte("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) +
			"\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nDate: " + date +
			"\r\nX-Served-By: " + site.name + "\r\nConnection: close\r\n\r\n" + body)
		site.htmlDate = date
	}
	return site.html
}

var errNotTCP = errors.New("not a TCP listener")
