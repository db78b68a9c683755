package verify

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/node"
)

// CurlClient drives the real curl binary in a node's namespace, one process and
// one connection per request, as the lab itself does.
type CurlClient struct {
	From    node.Node
	Source  string        // --interface, when set
	Timeout time.Duration // per request; 5s when zero
}

// Get requests url n times and records which server answered.
func (c CurlClient) Get(ctx context.Context, url string, n int) Result {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	r := Result{Counts: map[string]int{}}
	for i := range n {
		args := []string{"-s", "-k", "--fail", "--max-time", fmt.Sprint(timeout.Seconds()), url}
		if c.Source != "" {
			args = append([]string{"--interface", c.Source}, args...)
		}
		cmd := exec.CommandContext(ctx, "curl", args...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := c.From.Run(cmd)
		name, _, _ := strings.Cut(out.String(), "\n")
		name = strings.TrimSpace(name)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("request %d: curl: %v %s", i+1, err, strings.TrimSpace(errOut.String())))
			name = ""
		} else {
			r.Counts[name]++
		}
		r.Sequence = append(r.Sequence, name)
	}
	return r
}
