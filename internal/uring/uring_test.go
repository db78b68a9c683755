package uring

import (
	"errors"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T) *Ring {
	t.Helper()
	runtime.LockOSThread() // single issuer: this thread only
	t.Cleanup(runtime.UnlockOSThread)
	r, err := New(8)
	if errors.Is(err, ErrUnsupported) {
		t.Skipf("no ring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestRecvAndTimeout(t *testing.T) {
	r := newRing(t)
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	buf := make([]byte, 16)
	sqe := r.SQE()
	sqe.Opcode, sqe.Fd, sqe.UserData = OpRecv, int32(fds[1]), 42
	sqe.Addr, sqe.Len = uint64(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf))
	if r.Free() != 7 {
		t.Fatalf("Free() = %d after one SQE, want 7", r.Free())
	}
	// Nothing to receive yet: the wait times out, with nothing completed.
	if err := r.Enter(true, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	var got []CQE
	r.Completions(func(c CQE) { got = append(got, c) })
	if len(got) != 0 {
		t.Fatalf("completed with nothing sent: %+v", got)
	}
	unix.Write(fds[0], []byte("hello"))
	if err := r.Enter(true, time.Second); err != nil {
		t.Fatal(err)
	}
	r.Completions(func(c CQE) { got = append(got, c) })
	if len(got) != 1 || got[0].UserData != 42 || got[0].Res != 5 || string(buf[:5]) != "hello" {
		t.Fatalf("completions %+v, buffer %q", got, buf)
	}
}

// A failed link head completes with its error; what was linked after it
// completes with nothing when the head skips its success.
func TestLinkFailure(t *testing.T) {
	r := newRing(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: [4]byte{127, 0, 0, 1}} // port 0: refused
	sqe := r.SQE()
	sqe.Opcode, sqe.Fd, sqe.Flags, sqe.UserData = OpConnect, int32(fd), Link|CQESkipSuccess, 1
	sqe.Addr, sqe.Off = uint64(uintptr(unsafe.Pointer(&sa))), unix.SizeofSockaddrInet4
	buf := make([]byte, 16)
	sqe = r.SQE()
	sqe.Opcode, sqe.Fd, sqe.UserData = OpRecv, int32(fd), 2
	sqe.Addr, sqe.Len = uint64(uintptr(unsafe.Pointer(&buf[0]))), uint32(len(buf))
	if err := r.Enter(true, time.Second); err != nil {
		t.Fatal(err)
	}
	r.Enter(false, 0)
	var got []CQE
	r.Completions(func(c CQE) { got = append(got, c) })
	if len(got) != 1 || got[0].UserData != 1 || got[0].Res >= 0 {
		t.Fatalf("completions %+v, want only the connect's failure", got)
	}
	runtime.KeepAlive(&sa)
}
