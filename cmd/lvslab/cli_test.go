package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/verify"
)

// runCLI runs a command line in this process and returns its exit status and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return exitStatus(err, &errOut), out.String(), errOut.String()
}

func TestEveryCommandHasHelp(t *testing.T) {
	for _, cmd := range []string{"up", "apply", "down", "status", "exec", "ipvs", "verify", "gc", "version", "export", "export keepalived",
		"sandbox", "sandbox run", "sandbox status", "sandbox stop", "image", "image build", "completion bash"} {
		code, out, errOut := runCLI(t, append(strings.Fields(cmd), "--help")...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("lvslab %s --help: status %d\n%s%s", cmd, code, out, errOut)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"bogus"}, {"up"}, {"up", "a.yaml", "b.yaml"}, {"exec", "client"}, {"up", "--no-such-flag", "x"},
		{"--kernel", "mars", "status"}, {"verify", "--client", "wget", "x"}, {"image", "build", "x"}} {
		code, _, errOut := runCLI(t, args...)
		if code != exitUsage || !strings.HasPrefix(errOut, "lvslab: ") {
			t.Errorf("lvslab %s: status %d, want %d, stderr %q", strings.Join(args, " "), code, exitUsage, errOut)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	for _, want := range []string{"lvslab ", "commit ", "go     go1.", "kernel "} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("version: status %d, %q lacks %q", code, out, want)
		}
	}
}

func TestCompletion(t *testing.T) {
	code, out, _ := runCLI(t, "completion", "bash")
	if code != 0 || !strings.Contains(out, "__start_lvslab") {
		t.Errorf("completion bash: status %d\n%.200s", code, out)
	}
}

func TestVerdictStatus(t *testing.T) {
	pass, fail, skip := verify.Outcome{Passed: true}, verify.Outcome{}, verify.Outcome{Skipped: true}
	for _, c := range []struct {
		results   []verify.Outcome
		allowSkip bool
		want      int
	}{
		{[]verify.Outcome{pass, pass}, false, 0},
		{[]verify.Outcome{pass, fail, skip}, false, exitFailed},
		{[]verify.Outcome{pass, fail, skip}, true, exitFailed},
		{[]verify.Outcome{pass, skip}, false, exitSkipped},
		{[]verify.Outcome{pass, skip}, true, 0},
	} {
		if got := exitStatus(verdictStatus(c.results, c.allowSkip), io.Discard); got != c.want {
			t.Errorf("%+v allowSkip=%v: exit %d, want %d", c.results, c.allowSkip, got, c.want)
		}
	}
}
