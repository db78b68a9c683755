package verify

import (
	"strings"
	"testing"
)

// A check whose expectations failed fails, even when the model could not
// predict (seen: a running lab with a killed web server was reported as
// skipped, and verify exited 0).
func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		problems          []string
		unjudged          string
		passed, skipped   bool
		message, contains string
	}{
		{nil, "", true, false, "", ""},
		{[]string{"5 requests failed, expected 0"}, "", false, false, "5 requests failed, expected 0", ""},
		{[]string{"5 requests failed, expected 0"}, "rr keeps a position", false, false, "", "not judged against the model either: rr keeps a position"},
		{nil, "rr keeps a position", false, true, "not judged against the model: rr keeps a position", ""},
	} {
		passed, skipped, msg := verdict(c.problems, c.unjudged)
		if passed != c.passed || skipped != c.skipped || (c.message != "" && msg != c.message) || !strings.Contains(msg, c.contains) {
			t.Errorf("verdict(%q, %q) = %v %v %q", c.problems, c.unjudged, passed, skipped, msg)
		}
	}
}
