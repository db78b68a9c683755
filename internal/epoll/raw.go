package epoll

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// System calls on non-blocking sockets, made without telling Go's scheduler
// (RawSyscall): none of them blocks. A call made through syscall.Syscall marks
// its thread as in a system call, and in the sandbox kernel every call is slow
// enough (about 30 µs) for Go's monitor thread to take the thread's processor
// away and wake another thread to run it, which costs more calls (futex, clock
// reads) than the one being made. Only for descriptors with O_NONBLOCK.

func errno(e unix.Errno) error {
	switch e {
	case 0:
		return nil
	case unix.EAGAIN:
		return unix.EAGAIN
	case unix.EINPROGRESS:
		return unix.EINPROGRESS
	}
	return e
}

// Read reads from a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, errno(e)
	}
	return int(n), nil
}

// Write writes to a non-blocking descriptor.
func Write(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	if e != 0 {
		return 0, errno(e)
	}
	return int(n), nil
}

// Close closes a socket without lingering (SO_LINGER unset: close does not wait).
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// Accept takes a connection from a non-blocking listening socket, itself
// non-blocking and close-on-exec, without its peer's address.
func Accept(fd int) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), 0, 0, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, errno(e)
	}
	return int(n), nil
}

// Connect starts connecting a non-blocking socket to ap (EINPROGRESS while it
// goes on).
func Connect(fd int, ap netip.AddrPort) error {
	return sockaddrCall(unix.SYS_CONNECT, fd, ap)
}

// Bind binds a socket to ap (a zero port: the kernel chooses).
func Bind(fd int, ap netip.AddrPort) error {
	return sockaddrCall(unix.SYS_BIND, fd, ap)
}

func sockaddrCall(trap uintptr, fd int, ap netip.AddrPort) error {
	var e unix.Errno
	if ap.Addr().Is4() {
		sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ap.Addr().As4()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		_, _, e = unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet4)
	} else {
		sa := unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: ap.Addr().As16()}
		binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:], ap.Port())
		_, _, e = unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unix.SizeofSockaddrInet6)
	}
	return errno(e)
}

// epollWait asks for ready events without waiting.
func epollWait(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, errno(e)
	}
	return int(n), nil
}
