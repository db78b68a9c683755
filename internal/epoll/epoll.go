// Package epoll waits for many raw, non-blocking sockets at once, for the
// lab's own HTTP traffic: the verify package's HTTP driver and the web daemon.
//
// Why not net.Conn: in the sandbox kernel (user-mode Linux) a system call costs
// about 30 µs and a clock read about 30 µs, and Go's net package spends some
// fifty of them on one HTTP exchange (per-connection epoll registration and
// removal, keep-alive and no-delay options, address look-ups, deadlines, a
// thread handing over to another). A connection driven here costs the calls
// the exchange needs (socket, connect, write, read, close; accept, read,
// write, close on the server side) and one epoll_ctl.
//
// The epoll descriptor itself is registered with Go's network poller, so a
// goroutine that waits parks as one waiting on a net.Conn does; its thread is
// free and is not handed over while it waits.
package epoll

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Event flags, for Add.
const (
	In    = unix.EPOLLIN
	Out   = unix.EPOLLOUT
	RDHup = unix.EPOLLRDHUP // the peer closed its side (its FIN arrived)
	Err   = unix.EPOLLERR
	Hup   = unix.EPOLLHUP
	ET    = unix.EPOLLET
)

// Poller is one epoll instance. It is not safe for concurrent use, except that
// its context may end at any time.
type Poller struct {
	fd       int
	file     *os.File // fd, registered with Go's network poller
	raw      syscall.RawConn
	events   []unix.EpollEvent
	deadline time.Time // the deadline set on file
	ctx      context.Context
	stop     func() bool
}

// New makes a poller that returns at most size events per Wait. When ctx
// ends, a waiting Wait returns ctx's error.
func New(ctx context.Context, size int) (*Poller, error) {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("epoll: non-blocking: %w", err)
	}
	file := os.NewFile(uintptr(fd), "epoll") // non-blocking: Go polls it
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	p := &Poller{fd: fd, file: file, raw: raw, events: make([]unix.EpollEvent, max(size, 1)), ctx: ctx}
	// A deadline in the past wakes a waiting Wait at once.
	p.stop = context.AfterFunc(ctx, func() { _ = file.SetReadDeadline(time.Unix(1, 0)) })
	return p, nil
}

// Add watches fd for events (with ET for edge-triggered). Events report fd as
// their Fd. Closing fd removes it.
func (p *Poller) Add(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.fd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add fd %d: %w", fd, err)
	}
	return nil
}

// Modify changes the events watched for fd.
func (p *Poller) Modify(fd int, events uint32) error {
	ev := unix.EpollEvent{Events: events, Fd: int32(fd)}
	if err := unix.EpollCtl(p.fd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl modify fd %d: %w", fd, err)
	}
	return nil
}

// Wait waits until some watched descriptors have events, and returns them
// (valid until the next Wait). It returns no events and no error once
// deadline has passed (a zero deadline never passes), and ctx's error once the
// poller's context has ended. Setting a new deadline costs clock reads: keep
// one until it passes.
func (p *Poller) Wait(deadline time.Time) ([]unix.EpollEvent, error) {
	if !deadline.Equal(p.deadline) {
		if err := p.file.SetReadDeadline(deadline); err != nil {
			return nil, fmt.Errorf("epoll: deadline: %w", err)
		}
		p.deadline = deadline
	}
	if err := p.ctx.Err(); err != nil {
		return nil, err // also when it ended before the deadline above was set
	}
	n := 0
	var werr error
	// RawRead forgets a readiness Go's poller saw before it was called, so it
	// always asks epoll first, then parks if there was nothing.
	err := p.raw.Read(func(uintptr) bool {
		for {
			n, werr = epollWait(p.fd, p.events)
			if werr != unix.EINTR {
				return n > 0 || werr != nil
			}
		}
	})
	if err == nil {
		err = werr
	}
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if cerr := p.ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("epoll_wait: %w", err)
	}
	if n < 0 {
		n = 0
	}
	return p.events[:n], nil
}

// Close closes the poller (not the descriptors it watched).
func (p *Poller) Close() error {
	p.stop()
	return p.file.Close()
}
