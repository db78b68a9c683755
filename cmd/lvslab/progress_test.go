package main

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// Not on a terminal: only the ✓ lines, as before. Live (LVSLAB_PROGRESS, as
// the host sets it for the sandbox): a spinner line with the elapsed time,
// cleared, then the step with its time.
func TestProgress(t *testing.T) {
	var b bytes.Buffer
	p := newProgress(&b)
	p.begin("topology x")
	p.finish("✓", "topology x")
	if b.String() != "✓ topology x\n" {
		t.Fatalf("not live: %q", b.String())
	}

	t.Setenv(envProgress, "1")
	b.Reset()
	p = newProgress(&b)
	p.begin("topology x")
	time.Sleep(250 * time.Millisecond)
	p.finish("✓", "topology x")
	p.begin("sandbox")
	p.clear()
	out := b.String()
	if !regexp.MustCompile(`\r\x1b\[K⠋ topology x  0\.\ds`).MatchString(out) {
		t.Errorf("no live line: %q", out)
	}
	if !regexp.MustCompile(`\r\x1b\[K✓ topology x \(\d+\.\ds\)\n`).MatchString(out) {
		t.Errorf("no timed ✓ line: %q", out)
	}
}
