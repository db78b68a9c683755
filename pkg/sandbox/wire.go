package sandbox

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Frame types. Each frame is: type (1 byte), stream id (4 bytes), payload length
// (4 bytes, big-endian), payload.
const (
	frameOpen     = 'O' // host->guest: start a process; payload is a JSON Request
	frameStdin    = 'I' // host->guest: stdin bytes
	frameStdinEOF = 'C' // host->guest: close stdin
	frameSignal   = 'S' // host->guest: signal the stream's process group; payload 4 bytes big-endian
	frameKill     = 'K' // host->guest: kill the stream's process group
	framePowerOff = 'P' // host->guest: power the kernel off
	frameStdout   = '1' // guest->host
	frameStderr   = '2' // guest->host
	frameExit     = 'X' // guest->host: exit status, payload 4 bytes big-endian
	frameReady    = 'R' // guest->host: the agent is serving
	// supervisor->client: the kernel stopped under the stream; payload is the
	// error text (how it ended, its console's last lines).
	frameStopped = 'D'
)

// DefaultGrace is how long a cancelled command has to exit after its SIGINT
// (time enough for a guest `lvslab up` to roll a lab back) before it is killed.
const DefaultGrace = 20 * time.Second

const maxPayload = 1 << 20

type frame struct {
	typ     byte
	stream  uint32
	payload []byte
}

// Request asks the agent to run a process.
type Request struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
}

// frameWriter serializes frames from many goroutines onto one stream.
type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (fw *frameWriter) write(typ byte, stream uint32, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for first := true; first || len(p) > 0; first = false {
		chunk := p
		if len(chunk) > 32<<10 {
			chunk = chunk[:32<<10]
		}
		p = p[len(chunk):]
		var hdr [9]byte
		hdr[0] = typ
		binary.BigEndian.PutUint32(hdr[1:], stream)
		binary.BigEndian.PutUint32(hdr[5:], uint32(len(chunk)))
		if _, err := fw.w.Write(append(hdr[:], chunk...)); err != nil {
			return err
		}
	}
	return nil
}

func readFrame(r io.Reader) (frame, error) {
	var hdr [9]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return frame{}, err
	}
	f := frame{typ: hdr[0], stream: binary.BigEndian.Uint32(hdr[1:])}
	n := binary.BigEndian.Uint32(hdr[5:])
	if n > maxPayload {
		return frame{}, fmt.Errorf("sandbox: frame of %d bytes: stream out of sync", n)
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.payload); err != nil {
		return frame{}, err
	}
	return f, nil
}

// intPayload encodes an exit status or a signal number.
func intPayload(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(int32(n))) }

func exitPayload(code int) []byte { return intPayload(code) }

func exitCode(p []byte) int {
	if len(p) != 4 {
		return 255
	}
	return int(int32(binary.BigEndian.Uint32(p)))
}

// errClosed is returned once the link to the guest is gone, when nothing better
// is known about why.
var errClosed = errors.New("sandbox: link to the kernel closed")

// ErrKernelStopped is matched (errors.Is) by the error of every call cut short
// because the sandbox kernel stopped; the error's text says how it ended and
// quotes the last lines of its console.
var ErrKernelStopped = errors.New("sandbox: the sandbox kernel stopped")

// kernelStoppedError carries its whole text, so that it crosses the
// supervisor's socket unchanged.
type kernelStoppedError struct{ msg string }

func (e kernelStoppedError) Error() string        { return e.msg }
func (e kernelStoppedError) Is(target error) bool { return target == ErrKernelStopped }

// mux multiplexes streams over one framed link (the host's side of the serial line).
type mux struct {
	fw      *frameWriter
	onClose func(error) error // says why the link closed; nil: errClosed
	mu      sync.Mutex
	next    uint32
	streams map[uint32]chan frame
	ready   chan struct{}
	done    chan struct{}
	err     error // why the link closed, once done is closed
}

// newMux serves the link r/w. onClose, when not nil, is called once with the
// read error when the link breaks and returns the error the streams report (it
// may wait a bounded time to learn why).
func newMux(r io.Reader, w io.Writer, onClose func(error) error) *mux {
	m := &mux{fw: &frameWriter{w: w}, onClose: onClose, streams: map[uint32]chan frame{}, ready: make(chan struct{}), done: make(chan struct{})}
	go m.read(r)
	return m
}

// closedErr is why the link closed; call it only once done is closed.
func (m *mux) closedErr() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.err
}

// final reports whether f is a stream's last frame.
func final(f frame) bool { return f.typ == frameExit || f.typ == frameStopped }

func (m *mux) read(r io.Reader) {
	var once sync.Once
	for {
		f, err := readFrame(r)
		if err != nil {
			why := errClosed
			if m.onClose != nil {
				why = m.onClose(err)
			}
			m.mu.Lock()
			m.err = why
			for id, ch := range m.streams {
				close(ch)
				delete(m.streams, id)
			}
			close(m.done) // under the lock: open cannot add a stream that is never closed
			m.mu.Unlock()
			return
		}
		if f.typ == frameReady {
			once.Do(func() { close(m.ready) })
			continue
		}
		m.mu.Lock()
		ch := m.streams[f.stream]
		if final(f) && ch != nil {
			delete(m.streams, f.stream)
		}
		m.mu.Unlock()
		if ch == nil {
			continue
		}
		ch <- f
		if final(f) {
			close(ch)
		}
	}
}

// stream is one process on the guest.
type stream struct {
	m  *mux
	id uint32
	in chan frame
}

// open starts a process on a new stream. When track is not nil, it is
// incremented for the stream, before the link can close.
func (m *mux) open(req []byte, track *sync.WaitGroup) (*stream, error) {
	m.mu.Lock()
	select {
	case <-m.done:
		defer m.mu.Unlock()
		return nil, m.err
	default:
	}
	if track != nil {
		track.Add(1)
	}
	m.next++
	s := &stream{m: m, id: m.next, in: make(chan frame, 64)}
	m.streams[s.id] = s.in
	m.mu.Unlock()
	if err := m.fw.write(frameOpen, s.id, req); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *stream) send(typ byte, p []byte) error { return s.m.fw.write(typ, s.id, p) }

// pump copies r to the stream as stdin frames, then closes the guest's stdin.
func (s *stream) pump(r io.Reader) {
	if r != nil {
		buf := make([]byte, 32<<10)
		for {
			n, err := r.Read(buf)
			if n > 0 && s.send(frameStdin, buf[:n]) != nil {
				return
			}
			if err != nil {
				break
			}
		}
	}
	_ = s.send(frameStdinEOF, nil)
}

// exec runs one request on a new stream and waits for its exit status.
func (m *mux) exec(ctx context.Context, grace time.Duration, req Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	s, err := m.open(b, nil)
	if err != nil {
		return 0, err
	}
	return s.wait(ctx, grace, stdin, stdout, stderr)
}

// wait relays the stream's output until its exit status arrives. When ctx ends
// it interrupts the process (SIGINT to its process group, as a terminal's
// Ctrl-C does) and, if the process has not exited after grace (DefaultGrace
// when 0), kills the group. The status is then the process's, not an error.
func (s *stream) wait(ctx context.Context, grace time.Duration, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	if grace <= 0 {
		grace = DefaultGrace
	}
	go s.pump(stdin)
	cancelled := ctx.Done()
	var escalate <-chan time.Time
	for {
		select {
		case f, ok := <-s.in:
			if !ok {
				return 0, s.m.closedErr()
			}
			switch f.typ {
			case frameStdout:
				_, _ = stdout.Write(f.payload)
			case frameStderr:
				_, _ = stderr.Write(f.payload)
			case frameExit:
				return exitCode(f.payload), nil
			case frameStopped:
				return 0, kernelStoppedError{string(f.payload)}
			}
		case <-cancelled:
			cancelled = nil
			_ = s.send(frameSignal, intPayload(int(unix.SIGINT)))
			t := time.NewTimer(grace)
			defer t.Stop()
			escalate = t.C
		case <-escalate:
			escalate = nil
			_ = s.send(frameKill, nil)
		}
	}
}
