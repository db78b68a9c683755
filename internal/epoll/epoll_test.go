package epoll

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPair connects a raw non-blocking socket to a listener on loopback and
// returns both ends: the raw descriptor and the accepted net.Conn.
func socketPair(t *testing.T, p *Poller) (int, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Close(fd) })
	if err := Bind(fd, netip.MustParseAddrPort("127.0.0.1:0")); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(fd, In|Out|RDHup|ET); err != nil {
		t.Fatal(err)
	}
	if err := Connect(fd, netip.MustParseAddrPort(ln.Addr().String())); err != nil && err != unix.EINPROGRESS {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return fd, c
}

func TestPollerEvents(t *testing.T) {
	p, err := New(context.Background(), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fd, peer := socketPair(t, p)
	deadline := time.Now().Add(5 * time.Second)
	evs, err := p.Wait(deadline)
	if err != nil || len(evs) != 1 || evs[0].Fd != int32(fd) || evs[0].Events&Out == 0 {
		t.Fatalf("connected: events %+v, %v; want Out on fd %d", evs, err, fd)
	}
	if n, err := Write(fd, []byte("ping")); n != 4 || err != nil {
		t.Fatalf("write: %d %v", n, err)
	}
	buf := make([]byte, 4)
	if _, err := peer.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("peer read %q %v", buf, err)
	}
	if n, err := Read(fd, buf); err != unix.EAGAIN {
		t.Fatalf("read with nothing sent: %d %v, want EAGAIN", n, err)
	}
	peer.Write([]byte("pong"))
	peer.Close()
	// Edge-triggered: the answer and the FIN may come as one event or two.
	var got []byte
	for rdhup := false; !rdhup; {
		evs, err := p.Wait(deadline)
		if err != nil || len(evs) == 0 {
			t.Fatalf("answer: events %+v, %v", evs, err)
		}
		rdhup = evs[0].Events&RDHup != 0
		n, err := Read(fd, buf)
		if err != nil && err != unix.EAGAIN {
			t.Fatal(err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "pong" {
		t.Fatalf("read %q, want pong", got)
	}
}

func TestPollerDeadline(t *testing.T) {
	p, err := New(context.Background(), 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	t0 := time.Now()
	evs, err := p.Wait(t0.Add(50 * time.Millisecond))
	if err != nil || len(evs) != 0 {
		t.Fatalf("nothing watched: %+v %v, want no events, no error", evs, err)
	}
	if d := time.Since(t0); d < 50*time.Millisecond {
		t.Fatalf("returned after %s, before its deadline", d)
	}
}

func TestPollerContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	p, err := New(ctx, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := p.Wait(time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait after cancel: %v, want context.Canceled", err)
	}
	if _, err := p.Wait(time.Now().Add(time.Hour)); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a new deadline after cancel: %v, want context.Canceled", err)
	}
}

func TestAcceptRaw(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	var lfd int
	rc.Control(func(fd uintptr) { lfd = int(fd) })
	if _, err := Accept(lfd); err != unix.EAGAIN {
		t.Fatalf("accept with none waiting: %v, want EAGAIN", err)
	}
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var fd int
	for deadline := time.Now().Add(5 * time.Second); ; {
		if fd, err = Accept(lfd); err != unix.EAGAIN || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	if fl, _ := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); fl&unix.O_NONBLOCK == 0 {
		t.Fatal("accepted socket is blocking")
	}
}

func TestBatch(t *testing.T) {
	if attr, err := unix.SchedGetAttr(unix.Gettid(), 0); err != nil || attr.Policy != unix.SCHED_NORMAL {
		t.Skipf("this process does not run under SCHED_NORMAL: %+v %v", attr, err)
	}
	restore, err := Batch()
	if err != nil {
		t.Skipf("sched_setattr refused here: %v", err)
	}
	attr, err := unix.SchedGetAttr(unix.Gettid(), 0)
	if err != nil || attr.Policy != unix.SCHED_BATCH {
		t.Fatalf("under Batch: policy %+v %v, want SCHED_BATCH", attr, err)
	}
	restore()
	attr, err = unix.SchedGetAttr(unix.Gettid(), 0)
	if err != nil || attr.Policy != unix.SCHED_NORMAL {
		t.Fatalf("restored: policy %+v %v, want SCHED_NORMAL", attr, err)
	}
}
