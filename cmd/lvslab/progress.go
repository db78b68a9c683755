package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// envProgress tells the lvslab that runs a command inside the sandbox that the
// host's standard error is a terminal: it then shows progress lines too.
const envProgress = "LVSLAB_PROGRESS"

// progress shows a long operation's steps: on a terminal, the running step
// on a line of its own with its elapsed time, rewritten ten times a second,
// then "✓ step (1.4s)"; elsewhere only the "✓ step" line when it is done, as a
// log wants it.
type progress struct {
	w    io.Writer
	live bool

	mu    sync.Mutex
	name  string
	start time.Time
	stop  chan struct{}
	done  chan struct{}
}

// newProgress writes to w, live when w is a terminal (or the host said its
// standard error is one).
func newProgress(w io.Writer) *progress {
	live := os.Getenv(envProgress) != ""
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		live = true
	}
	return &progress{w: w, live: live}
}

var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// begin starts showing a step (live only).
func (p *progress) begin(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
	p.name, p.start = name, time.Now()
	if !p.live {
		return
	}
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func(stop, done chan struct{}, name string, start time.Time) {
		defer close(done)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			fmt.Fprintf(p.w, "\r\x1b[K%s %s  %.1fs", spinner[i%len(spinner)], name, time.Since(start).Seconds())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}(p.stop, p.done, name, p.start)
}

// end stops the live line, if one runs; p.mu is held.
func (p *progress) end() {
	if p.stop != nil {
		close(p.stop)
		<-p.done
		p.stop, p.done = nil, nil
		fmt.Fprint(p.w, "\r\x1b[K")
	}
}

// clear ends the live line without a mark (the caller says what happened).
func (p *progress) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
	p.name, p.start = "", time.Time{}
}

// finish ends a step with its mark (✓ or ✗); live, with its time.
func (p *progress) finish(mark, name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
	if p.live && !p.start.IsZero() && name == p.name {
		fmt.Fprintf(p.w, "%s %s (%.1fs)\n", mark, name, time.Since(p.start).Seconds())
	} else {
		fmt.Fprintf(p.w, "%s %s\n", mark, name)
	}
	p.name, p.start = "", time.Time{}
}
