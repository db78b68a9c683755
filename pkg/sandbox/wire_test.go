package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
)

// link starts the guest agent on this host, wired to a host-side mux by pipes in
// place of the serial line, and returns the mux.
func link(t *testing.T) *mux {
	t.Helper()
	toGuestR, toGuestW := io.Pipe()
	fromGuestR, fromGuestW := io.Pipe()
	a := &agent{fw: &frameWriter{w: fromGuestW}, procs: map[uint32]*guestProc{}}
	done := make(chan error, 1)
	go func() { done <- a.serve(toGuestR) }()
	m := newMux(fromGuestR, toGuestW, nil)
	t.Cleanup(func() {
		_ = m.fw.write(framePowerOff, 0, nil)
		<-done
		fromGuestW.Close()
		toGuestW.Close()
	})
	select {
	case <-m.ready:
	case <-time.After(5 * time.Second):
		t.Fatal("agent not ready")
	}
	return m
}

func run(t *testing.T, m *mux, stdin io.Reader, argv ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := m.exec(context.Background(), 0, Request{Argv: argv}, stdin, &out, &errOut)
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), code
}

func TestAgentStreamsAndStatus(t *testing.T) {
	m := link(t)
	out, errOut, code := run(t, m, nil, "sh", "-c", "echo out; echo err >&2; exit 5")
	if out != "out\n" || errOut != "err\n" || code != 5 {
		t.Fatalf("got %q %q %d", out, errOut, code)
	}
}

func TestAgentStdinAndBinary(t *testing.T) {
	m := link(t)
	in := make([]byte, 200<<10) // larger than a frame: chunked both ways
	for i := range in {
		in[i] = byte(i * 7)
	}
	out, _, code := run(t, m, bytes.NewReader(in), "cat")
	if code != 0 || out != string(in) {
		t.Fatalf("cat returned %d bytes (status %d), want the %d sent", len(out), code, len(in))
	}
}

func TestAgentConcurrentStreams(t *testing.T) {
	m := link(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, _, code := run(t, m, nil, "sh", "-c", fmt.Sprintf("sleep 0.0%d; echo %d; exit %d", i%5, i, i))
			if strings.TrimSpace(out) != fmt.Sprint(i) || code != i {
				errs <- fmt.Errorf("stream %d: got %q status %d", i, out, code)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestAgentMissingCommand(t *testing.T) {
	m := link(t)
	_, errOut, code := run(t, m, nil, "/nonexistent/lvslab-test")
	if code != 127 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("got status %d, stderr %q", code, errOut)
	}
}

// rollback is a command that rolls back on SIGINT, as a guest lvslab up does,
// while a background child (which a non-interactive shell starts with SIGINT
// ignored) keeps its output open.
const rollback = `trap "echo rolled back; exit 3" INT; echo started; sleep 30 & wait`

// marked is a writer that closes seen once what was written contains marker.
type marked struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	seen   chan struct{}
}

func newMarked(marker string) *marked { return &marked{marker: marker, seen: make(chan struct{})} }

func (w *marked) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	had := strings.Contains(w.buf.String(), w.marker)
	w.buf.Write(p)
	if !had && strings.Contains(w.buf.String(), w.marker) {
		close(w.seen)
	}
	return len(p), nil
}

func (w *marked) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// cancelled is how a cancelled exec ended.
type cancelled struct {
	out  string
	code int
	err  error
	took time.Duration // from the cancel
}

// execCancelled runs argv through exec and cancels it once its stdout shows
// "started".
func execCancelled(t *testing.T, exec func(context.Context, Request, io.Writer) (int, error), argv ...string) cancelled {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := newMarked("started")
	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := exec(ctx, Request{Argv: argv}, out)
		res <- result{code, err}
	}()
	select {
	case <-out.seen:
	case r := <-res:
		t.Fatalf("ended before it started: status %d, err %v, output %q", r.code, r.err, out)
	case <-time.After(60 * time.Second):
		t.Fatalf("no start marker after 60s; output %q", out)
	}
	start := time.Now()
	cancel()
	select {
	case r := <-res:
		return cancelled{out.String(), r.code, r.err, time.Since(start)}
	case <-time.After(60 * time.Second):
		t.Fatalf("still running 60s after the cancel; output %q", out)
	}
	panic("unreachable")
}

// muxExec is exec through a mux with a given grace period.
func muxExec(m *mux, grace time.Duration) func(context.Context, Request, io.Writer) (int, error) {
	return func(ctx context.Context, req Request, out io.Writer) (int, error) {
		return m.exec(ctx, grace, req, nil, out, io.Discard)
	}
}

func TestAgentInterruptOnCancel(t *testing.T) {
	m := link(t)
	checkRolledBack(t, execCancelled(t, muxExec(m, 0), "sh", "-c", rollback))
}

// checkRolledBack checks that the rollback command was interrupted, not killed.
func checkRolledBack(t *testing.T, c cancelled) {
	t.Helper()
	if c.err != nil || c.code != 3 || !strings.Contains(c.out, "rolled back") {
		t.Fatalf("status %d, err %v, output %q; want status 3 after \"rolled back\"", c.code, c.err, c.out)
	}
	if c.took > 10*time.Second { // the background sleep was left holding the output
		t.Errorf("took %v after the cancel", c.took)
	}
}

func TestAgentKillAfterGrace(t *testing.T) {
	m := link(t)
	const grace = 300 * time.Millisecond
	checkKilledAfter(t, grace, execCancelled(t, muxExec(m, grace), "sh", "-c", ignoresINT))
}

// ignoresINT is a command that ignores SIGINT.
const ignoresINT = `trap "" INT; echo started; sleep 30`

// checkKilledAfter checks that a command that ignores SIGINT was killed once
// the grace period had passed.
func checkKilledAfter(t *testing.T, grace time.Duration, c cancelled) {
	t.Helper()
	if c.err != nil || c.code != 128+9 {
		t.Fatalf("status %d, err %v, output %q; want 137 (killed)", c.code, c.err, c.out)
	}
	if c.took < grace || c.took > grace+10*time.Second {
		t.Errorf("killed %v after the cancel; the grace period is %v", c.took, grace)
	}
}

func TestExitPayload(t *testing.T) {
	for _, c := range []int{0, 1, 127, 255, -1} {
		if got := exitCode(exitPayload(c)); got != c {
			t.Errorf("%d -> %d", c, got)
		}
	}
}

func TestTail(t *testing.T) {
	tl := &tail{max: 3}
	fmt.Fprint(tl, "one\r\ntwo\n\nthr")
	fmt.Fprint(tl, "ee\nfour\nfi")
	if got, want := tl.quote(), "  three\n  four\n  fi"; got != want {
		t.Errorf("quote = %q, want %q", got, want)
	}
	tl = &tail{max: 4}
	fmt.Fprint(tl, "Kernel panic - not syncing: x\nStack:\n 606944ba 607e7fcd\n 00000016 607e7fcd\nCall Trace:\n")
	fmt.Fprint(tl, " [<6002d37a>] show_stack+0x184/0x193\n [<606944ba>] ? _printk+0x0/0x94\n [<6002c171>] fork_handler+0x92/0x94\n")
	if got, want := tl.quote(), "  Stack:\n  (2 lines of stack dump)\n  Call Trace:\n  (3 lines of stack dump)"; got != want {
		t.Errorf("quote = %q, want %q", got, want)
	}
	if got := (&tail{max: 3}).quote(); got != "  (nothing)" {
		t.Errorf("empty quote = %q", got)
	}
}
