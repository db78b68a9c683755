package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Frame types. Each frame is: type (1 byte), stream id (4 bytes), payload length
// (4 bytes, big-endian), payload.
const (
	frameOpen     = 'O' // host->guest: start a process; payload is a JSON Request
	frameStdin    = 'I' // host->guest: stdin bytes
	frameStdinEOF = 'C' // host->guest: close stdin
	frameKill     = 'K' // host->guest: kill the stream's process
	framePowerOff = 'P' // host->guest: power the kernel off
	frameStdout   = '1' // guest->host
	frameStderr   = '2' // guest->host
	frameExit     = 'X' // guest->host: exit status, payload 4 bytes big-endian
	frameReady    = 'R' // guest->host: the agent is serving
)

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

func exitPayload(code int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(int32(code))) }

func exitCode(p []byte) int {
	if len(p) != 4 {
		return 255
	}
	return int(int32(binary.BigEndian.Uint32(p)))
}

// errClosed is returned once the link to the guest is gone.
var errClosed = errors.New("sandbox: link to the kernel closed")

// mux multiplexes streams over one framed link (the host's side of the serial line).
type mux struct {
	fw      *frameWriter
	mu      sync.Mutex
	next    uint32
	streams map[uint32]chan frame
	ready   chan struct{}
	done    chan struct{}
	err     error
}

func newMux(r io.Reader, w io.Writer) *mux {
	m := &mux{fw: &frameWriter{w: w}, streams: map[uint32]chan frame{}, ready: make(chan struct{}), done: make(chan struct{})}
	go m.read(r)
	return m
}

func (m *mux) read(r io.Reader) {
	var once sync.Once
	for {
		f, err := readFrame(r)
		if err != nil {
			m.mu.Lock()
			m.err = err
			for id, ch := range m.streams {
				close(ch)
				delete(m.streams, id)
			}
			m.mu.Unlock()
			close(m.done)
			return
		}
		if f.typ == frameReady {
			once.Do(func() { close(m.ready) })
			continue
		}
		m.mu.Lock()
		ch := m.streams[f.stream]
		if f.typ == frameExit && ch != nil {
			delete(m.streams, f.stream)
		}
		m.mu.Unlock()
		if ch == nil {
			continue
		}
		ch <- f
		if f.typ == frameExit {
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

func (m *mux) open(req []byte) (*stream, error) {
	m.mu.Lock()
	select {
	case <-m.done:
		m.mu.Unlock()
		return nil, errClosed
	default:
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
