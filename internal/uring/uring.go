// Package uring is a minimal io_uring (Linux 6.1 and later): one ring, used by
// one thread, for batches of socket operations submitted and reaped with one
// system call. lvslab's concurrent HTTP driver uses it where the kernel has it:
// in the sandbox kernel a system call costs about 30 µs, and a connection
// driven through the ring costs two (socket and bind) instead of seven.
//
// The ring is set up single-issuer with deferred task work
// (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN): every call must
// come from the thread that made it (lock it: runtime.LockOSThread), and
// completions are only processed inside Enter. Memory that an operation reads
// or writes (addresses, buffers) must stay referenced until its completion.
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Operations (include/uapi/linux/io_uring.h).
const (
	OpAsyncCancel = 14
	OpConnect     = 16
	OpClose       = 19
	OpSend        = 26
	OpRecv        = 27
)

// SQE flags.
const (
	Link           = 1 << 2 // the next SQE starts once this one succeeded
	CQESkipSuccess = 1 << 6 // no completion when it succeeds
)

const (
	setupSingleIssuer = 1 << 12
	setupDeferTaskrun = 1 << 13
	enterGetEvents    = 1 << 0
	enterExtArg       = 1 << 3
	featSingleMmap    = 1 << 0
	featCQESkip       = 1 << 11
	offSQRing         = 0
	offCQRing         = 0x8000000
	offSQEs           = 0x10000000
)

type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	resv2                                                           uint64
}

type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	resv2                                                           uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqringOffsets
	cqOff                                                                  cqringOffsets
}

// SQE is a submission queue entry (64 bytes).
type SQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // msg_flags for send and recv
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	FileIndex   uint32
	Addr3       uint64
	pad         uint64
}

// CQE is a completion queue entry.
type CQE struct {
	UserData uint64
	Res      int32 // the operation's result: a count, or -errno
	Flags    uint32
}

type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	pad       uint32
	ts        uint64
}

// Ring is one io_uring instance.
type Ring struct {
	fd      int
	sqMem   []byte
	cqMem   []byte
	sqeMem  []byte
	sqes    []SQE
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []CQE
	tail    uint32 // our SQ tail, published at Enter
	queued  uint32 // SQEs not yet submitted
	ts      unix.Timespec
	arg     getEventsArg // points to ts; both on the heap, where they stay put
}

// ErrUnsupported says the kernel cannot give this ring (no io_uring, or
// older than 6.1, or forbidden here): use something else.
var ErrUnsupported = errors.New("io_uring with single-issuer deferred task work is not available")

// New sets up a ring with room for entries submissions at once.
func New(entries uint32) (*Ring, error) {
	p := params{flags: setupSingleIssuer | setupDeferTaskrun}
	fd, _, e := unix.RawSyscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if e != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnsupported, e)
	}
	r := &Ring{fd: int(fd)}
	if p.features&featSingleMmap == 0 || p.features&featCQESkip == 0 {
		unix.Close(r.fd)
		return nil, fmt.Errorf("%w: features %#x", ErrUnsupported, p.features)
	}
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(CQE{})))
	size := max(sqSize, cqSize)
	mem, err := unix.Mmap(r.fd, offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		unix.Close(r.fd)
		return nil, fmt.Errorf("io_uring: map rings: %w", err)
	}
	r.sqMem, r.cqMem = mem, mem
	sqeMem, err := unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(SQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring: map entries: %w", err)
	}
	r.sqeMem = sqeMem
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&sqeMem[0])), p.sqEntries)
	r.sqHead = (*uint32)(unsafe.Pointer(&mem[p.sqOff.head]))
	r.sqTail = (*uint32)(unsafe.Pointer(&mem[p.sqOff.tail]))
	r.sqMask = *(*uint32)(unsafe.Pointer(&mem[p.sqOff.ringMask]))
	r.sqArray = unsafe.Slice((*uint32)(unsafe.Pointer(&mem[p.sqOff.array])), p.sqEntries)
	r.cqHead = (*uint32)(unsafe.Pointer(&mem[p.cqOff.head]))
	r.cqTail = (*uint32)(unsafe.Pointer(&mem[p.cqOff.tail]))
	r.cqMask = *(*uint32)(unsafe.Pointer(&mem[p.cqOff.ringMask]))
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&mem[p.cqOff.cqes])), p.cqEntries)
	r.tail = atomic.LoadUint32(r.sqTail)
	return r, nil
}

// SQE returns the next free submission entry, zeroed, or nil when the queue
// is full (Enter submits it).
func (r *Ring) SQE() *SQE {
	if r.tail-atomic.LoadUint32(r.sqHead) >= uint32(len(r.sqes)) {
		return nil
	}
	i := r.tail & r.sqMask
	r.sqes[i] = SQE{}
	r.sqArray[i] = i
	r.tail++
	r.queued++
	return &r.sqes[i]
}

// Free is how many submission entries SQE can still give before Enter.
func (r *Ring) Free() int {
	return len(r.sqes) - int(r.tail-atomic.LoadUint32(r.sqHead))
}

// Enter submits what was queued and processes completions; with wait, it
// waits for at least one completion, at most for timeout (zero: without
// limit). Completions says what completed: none when the timeout passed (the
// kernel does not say so when Enter also submitted something).
func (r *Ring) Enter(wait bool, timeout time.Duration) error {
	atomic.StoreUint32(r.sqTail, r.tail)
	submit := r.queued
	r.queued = 0
	minComplete := uintptr(0)
	if wait {
		minComplete = 1
	}
	for {
		var n uintptr
		var e unix.Errno
		switch {
		case !wait:
			n, _, e = unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), 0, enterGetEvents, 0, 0)
		case timeout > 0:
			r.ts = unix.NsecToTimespec(int64(timeout))
			r.arg = getEventsArg{ts: uint64(uintptr(unsafe.Pointer(&r.ts)))}
			n, _, e = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), minComplete, enterGetEvents|enterExtArg, uintptr(unsafe.Pointer(&r.arg)), unsafe.Sizeof(r.arg))
		default:
			n, _, e = unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(submit), minComplete, enterGetEvents, 0, 0)
		}
		switch e {
		case 0, unix.ETIME:
			return nil
		case unix.EINTR, unix.EAGAIN, unix.EBUSY:
			submit -= min(submit, uint32(n))
			if e != unix.EINTR && !wait {
				return nil
			}
			continue
		}
		return fmt.Errorf("io_uring_enter: %w", e)
	}
}

// Completions calls fn for every completion there is, and frees their entries.
func (r *Ring) Completions(fn func(CQE)) {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		fn(r.cqes[head&r.cqMask])
	}
	atomic.StoreUint32(r.cqHead, head)
}

// Close tears the ring down. Operations still in flight are cancelled.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
	}
	if r.sqMem != nil {
		unix.Munmap(r.sqMem)
	}
	return unix.Close(r.fd)
}
