package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
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
	m := newMux(fromGuestR, toGuestW)
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
	code, err := m.exec(context.Background(), Request{Argv: argv}, stdin, &out, &errOut)
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

func TestAgentKillOnCancel(t *testing.T) {
	m := link(t)
	b, _ := json.Marshal(Request{Argv: []string{"sleep", "30"}})
	s, err := m.open(b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code, err := s.wait(ctx, nil, io.Discard, io.Discard)
	if err != nil || code != 128+9 {
		t.Fatalf("status %d, err %v; want 137 (killed)", code, err)
	}
}

func TestExitPayload(t *testing.T) {
	for _, c := range []int{0, 1, 127, 255, -1} {
		if got := exitCode(exitPayload(c)); got != c {
			t.Errorf("%d -> %d", c, got)
		}
	}
}
