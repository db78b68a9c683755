package verify

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/lvslab/lvslab/internal/epoll"
	"github.com/lvslab/lvslab/internal/uring"
)

// The concurrent driver on io_uring, where the kernel has it (6.1 and later):
// a connection costs socket and bind as system calls, and its connect, send,
// receive (to the server's close: MSG_WAITALL) and close go into the ring as
// one linked chain, submitted and reaped for a whole batch of connections by
// one io_uring_enter. The epoll driver (exchange.go) spends seven calls on a
// connection; in the sandbox kernel, where a call costs about 30 µs and the
// client's calls took nine tenths of the time, this more than doubled the
// rate. It runs on one thread, locked inside the client's namespace.

// Parts of a connection's chain, in its completions' user data.
const (
	opConnect = iota
	opSend
	opRecv
	opClose
	opCancel
	opBits = 3
)

const ringRecvBuf = 4096 // the web daemon's answers are under 200 bytes

// ringConn is a connection in flight on the ring.
type ringConn struct {
	x         *exchange
	sa        [unix.SizeofSockaddrInet6]byte // the server's address, read by connect
	saLen     uint32
	err       error // the chain's first failure
	cancelled bool  // cancelled for its timeout
}

// getRing drives the run's connections through an io_uring ring, up to
// inflight at once, from srcs in turn (n each). It returns false, having sent
// nothing, when the kernel gives no ring (or no ports were given: the ring
// needs each connection's port chosen, to know its local address without a
// call); getPlain then uses the epoll driver.
func (ru *run) getRing(ctx context.Context, srcs []netip.Addr, n, inflight int, fail func(int, error)) bool {
	if ru.c.Ports == nil || ru.c.noRing {
		return false
	}
	ok := false
	err := ru.inNode(func() error {
		entries := uint32(1)
		for entries < uint32(4*inflight) && entries < 4096 {
			entries <<= 1
		}
		ring, err := uring.New(entries)
		if err != nil {
			return err
		}
		defer ring.Close()
		ok = true
		// A zero source is the kernel's choice: ask it once, and bind to it.
		for _, src := range srcs {
			if !src.IsValid() && !ru.resolved[src].IsValid() {
				a, err := routeSource(ru.t)
				if err != nil {
					return err
				}
				ru.resolved[src] = a
			}
		}
		ru.ring(ctx, ring, srcs, n, inflight, fail)
		return nil
	})
	if !ok {
		// No ring here (uring.ErrUnsupported, or it could not be set up):
		// the epoll driver, which reports any other trouble itself.
		return false
	}
	if err != nil { // before anything was sent
		for i := range n * len(srcs) {
			fail(i, err)
		}
	}
	return true
}

// inNode runs fn on a thread locked inside the client's namespace (the
// caller's own for a zero node).
func (ru *run) inNode(fn func() error) error {
	if ru.c.From.NSPath == "" {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		return fn()
	}
	return ru.c.From.Do(fn)
}

// routeSource is the address the kernel would send from to t's server (a
// UDP socket's connect sends nothing).
func routeSource(t target) (netip.Addr, error) {
	fd, err := unix.Socket(t.family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source address: %w", err)
	}
	defer unix.Close(fd)
	if err := epoll.Connect(fd, t.dst); err != nil {
		return netip.Addr{}, fmt.Errorf("source address towards %s: %w", t.dst, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("source address: %w", err)
	}
	return addrPort(sa).Addr(), nil
}

func (ru *run) ring(ctx context.Context, ring *uring.Ring, srcs []netip.Addr, n, inflight int, fail func(int, error)) {
	total := n * len(srcs)
	slots := make([]*ringConn, inflight)
	var free []int
	for s := range slots {
		slots[s] = &ringConn{}
		free = append(free, s)
	}
	live := 0
	next := 0
	finish := func(s int) {
		rc := slots[s]
		x := rc.x
		if sqe := ring.SQE(); sqe != nil {
			sqe.Opcode, sqe.Fd, sqe.Flags, sqe.UserData = uring.OpClose, int32(x.fd), uring.CQESkipSuccess, uint64(s<<opBits|opClose)
		} else {
			epoll.Close(x.fd)
		}
		err := rc.err
		if err == nil {
			err = ru.answer(x)
		}
		if err != nil {
			fail(x.i, err)
		}
		rc.x, rc.err, rc.cancelled = nil, nil, false
		ru.free = append(ru.free, x)
		free = append(free, s)
		live--
	}
	var waitUntil time.Time // a port may not be used before
	for next < total || live > 0 {
		if err := ctx.Err(); err != nil {
			ru.cancelAll(ring, slots, err)
			for ; next < total; next++ {
				fail(next, err)
			}
			ctx = context.Background() // the ring still has to be drained
		}
		for next < total && len(free) > 0 && ring.Free() >= 4 && waitUntil.IsZero() {
			s := free[len(free)-1]
			x, wait, err := ru.startRing(ring, slots[s], s, next, srcs[next%len(srcs)])
			if wait > 0 {
				ru.free = append(ru.free, x)
				waitUntil = time.Now().Add(wait)
				break
			}
			free = free[:len(free)-1]
			next++
			if err != nil {
				free = append(free, s)
				fail(x.i, err)
				continue
			}
			live++
		}
		if live == 0 {
			if !waitUntil.IsZero() {
				// Every port of the next block was used too recently.
				if err := sleep(ctx, time.Until(waitUntil)); err != nil {
					continue // failed above, next time round
				}
				waitUntil = time.Time{}
				ru.clock()
			}
			continue
		}
		if err := ring.Enter(true, ru.tickLen); err != nil {
			// The ring broke: what is left fails, its sockets closed.
			for _, rc := range slots {
				if rc.x != nil {
					fail(rc.x.i, err)
					epoll.Close(rc.x.fd)
					rc.x = nil
				}
			}
			for ; next < total; next++ {
				fail(next, err)
			}
			return
		}
		ring.Completions(func(cqe uring.CQE) {
			s, op := int(cqe.UserData>>opBits), int(cqe.UserData&(1<<opBits-1))
			rc := slots[s]
			if op == opClose || op == opCancel || rc.x == nil {
				return // a close or a cancel that failed: nothing to do
			}
			if cqe.Res < 0 {
				if rc.err == nil {
					e := unix.Errno(-cqe.Res)
					switch {
					case rc.cancelled:
						rc.err = fmt.Errorf("no answer within %s", ru.timeout)
					case op == opConnect:
						rc.err = fmt.Errorf("connect: %w", e)
					case op == opSend:
						rc.err = fmt.Errorf("write: %w", e)
					default:
						rc.err = fmt.Errorf("read: %w", e)
					}
				}
				// A failed connect or send leaves no completions behind it: with
				// CQE_SKIP_SUCCESS, the ones cancelled after it are skipped too.
				finish(s)
				return
			}
			if op != opRecv {
				return // connect and send skip their successes: not seen
			}
			// The receive waited for the server's close (MSG_WAITALL), unless
			// the buffer filled first: then it reads on, into a bigger one.
			x := rc.x
			x.resp = x.resp[:len(x.resp)+int(cqe.Res)]
			if len(x.resp) == cap(x.resp) && cqe.Res > 0 {
				if cap(x.resp) < maxResponse && ring.Free() > 0 {
					x.resp = append(x.resp, make([]byte, cap(x.resp))...)[:len(x.resp)]
					ru.recv(ring, s, x)
					return
				}
				rc.err = fmt.Errorf("answer longer than %d bytes", maxResponse)
			}
			finish(s)
		})
		old := ru.tick
		ru.clock()
		if ru.tick != old {
			for s, rc := range slots {
				if rc.x != nil && !rc.cancelled && ru.tick-rc.x.tick > ru.ticks && ring.Free() >= 3 {
					rc.cancelled = true
					for _, op := range []int{opConnect, opSend, opRecv} {
						sqe := ring.SQE()
						sqe.Opcode, sqe.Flags, sqe.UserData = uring.OpAsyncCancel, uring.CQESkipSuccess, uint64(s<<opBits|opCancel)
						sqe.Addr = uint64(s<<opBits | op)
					}
				}
			}
		}
		if !waitUntil.IsZero() && !time.Now().Before(waitUntil) {
			waitUntil = time.Time{}
		}
	}
	_ = ring.Enter(false, 0) // submit the last closes
}

// cancelAll cancels every operation in flight: their connections fail with
// err.
func (ru *run) cancelAll(ring *uring.Ring, slots []*ringConn, err error) {
	for s, rc := range slots {
		if rc.x == nil {
			continue
		}
		if rc.err == nil {
			rc.err = err
		}
		for _, op := range []int{opConnect, opSend, opRecv} {
			sqe := ring.SQE()
			if sqe == nil {
				_ = ring.Enter(false, 0)
				sqe = ring.SQE()
			}
			sqe.Opcode, sqe.Flags, sqe.UserData = uring.OpAsyncCancel, uring.CQESkipSuccess, uint64(s<<opBits|opCancel)
			sqe.Addr = uint64(s<<opBits | op)
		}
	}
}

// startRing opens connection i from src on slot s: socket and bind now,
// connect, send and receive queued as one chain.
func (ru *run) startRing(ring *uring.Ring, rc *ringConn, s, i int, src netip.Addr) (*exchange, time.Duration, error) {
	x := ru.newExchange(i, -1, src)
	fd, err := unix.Socket(ru.t.family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return x, 0, fmt.Errorf("socket: %w", err)
	}
	x.fd = fd
	local, wait, err := ru.bind(fd, src)
	if wait > 0 || err != nil {
		epoll.Close(fd)
		return x, wait, err
	}
	ru.res.Locals[i] = local
	rc.x = x
	rc.saLen = rawSockaddr(ru.t.dst, &rc.sa)
	if cap(x.resp) < ringRecvBuf {
		x.resp = make([]byte, 0, ringRecvBuf)
	}
	sqe := ring.SQE()
	sqe.Opcode, sqe.Fd, sqe.Flags, sqe.UserData = uring.OpConnect, int32(fd), uring.Link|uring.CQESkipSuccess, uint64(s<<opBits|opConnect)
	sqe.Addr, sqe.Off = uint64(uintptr(unsafe.Pointer(&rc.sa[0]))), uint64(rc.saLen)
	sqe = ring.SQE()
	sqe.Opcode, sqe.Fd, sqe.Flags, sqe.UserData = uring.OpSend, int32(fd), uring.Link|uring.CQESkipSuccess, uint64(s<<opBits|opSend)
	sqe.Addr, sqe.Len, sqe.OpFlags = uint64(uintptr(unsafe.Pointer(&ru.t.request[0]))), uint32(len(ru.t.request)), unix.MSG_NOSIGNAL
	ru.recv(ring, s, x)
	return x, 0, nil
}

// recv queues a receive into the rest of x's buffer, to the server's close.
func (ru *run) recv(ring *uring.Ring, s int, x *exchange) {
	space := x.resp[len(x.resp):cap(x.resp)]
	sqe := ring.SQE()
	sqe.Opcode, sqe.Fd, sqe.UserData = uring.OpRecv, int32(x.fd), uint64(s<<opBits|opRecv)
	sqe.Addr, sqe.Len, sqe.OpFlags = uint64(uintptr(unsafe.Pointer(&space[0]))), uint32(len(space)), unix.MSG_WAITALL
}

// rawSockaddr writes ap as the kernel's sockaddr_in or sockaddr_in6.
func rawSockaddr(ap netip.AddrPort, b *[unix.SizeofSockaddrInet6]byte) uint32 {
	*b = [unix.SizeofSockaddrInet6]byte{}
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	if ap.Addr().Is4() {
		binary.NativeEndian.PutUint16(b[0:], unix.AF_INET)
		a := ap.Addr().As4()
		copy(b[4:], a[:])
		return unix.SizeofSockaddrInet4
	}
	binary.NativeEndian.PutUint16(b[0:], unix.AF_INET6)
	a := ap.Addr().As16()
	copy(b[8:], a[:])
	return unix.SizeofSockaddrInet6
}
