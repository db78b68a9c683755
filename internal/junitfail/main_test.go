package main

import (
	"bytes"
	"strings"
	"testing"
)

// A report with one failed case among passed and skipped ones: only the
// failed one is printed, with its message indented and without colour codes.
func TestPrintFailures(t *testing.T) {
	var out bytes.Buffer
	if n := printFailures(&out, []string{"testdata/junit.xml", "testdata/missing.xml"}); n != 1 {
		t.Fatalf("%d failures, want 1", n)
	}
	want := "FAILED [It] nat-lc.yaml [containerlab, slow]\n  step 1: each new connection: the model predicted web1\n  observed web2\n"
	if got := out.String(); !strings.HasPrefix(got, want) {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}
