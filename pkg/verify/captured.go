package verify

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/capture"
	"github.com/lvslab/lvslab/pkg/lab"
)

// captureGrace is how long a check's capture goes on after the check has
// sent and read its last answer: frames still on their way (a connection's
// last ACK, an ARP reply slower than the rest).
const captureGrace = 200 * time.Millisecond

// broadcastMAC is Ethernet's broadcast address, as net.HardwareAddr writes it.
const broadcastMAC = "ff:ff:ff:ff:ff:ff"

// maxFrameLines bounds the frames an outcome lists; all are judged.
const maxFrameLines = 200

// captured runs a check while capturing on the interface it names, then
// judges the frames (Expect.Frames) on top of the check's own expectations.
// The socket is open before the first request leaves, so no frame of the
// check is missed.
func (v *Judge) captured(ctx context.Context, c lab.Check) Outcome {
	cp := c.Capture
	n, ok := v.Nodes[cp.Node]
	if !ok {
		return Outcome{Message: fmt.Sprintf("capture: node %s is not in lab %s", cp.Node, v.Lab)}
	}
	var filter *capture.Filter
	if cp.Filter != "" {
		f, err := capture.ParseFilter(cp.Filter)
		if err != nil {
			return Outcome{Message: "capture: " + err.Error()}
		}
		filter = f
	}
	sock, err := capture.Start(n, cp.Dev)
	if err != nil {
		return Outcome{Message: fmt.Sprintf("capture on %s %s: %v", cp.Node, cp.Dev, err)}
	}
	defer sock.Close()
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	var kept []capture.Frame
	done := make(chan error, 1)
	go func() {
		done <- sock.Run(cctx, capture.Options{Filter: filter}, func(f capture.Frame) error {
			kept = append(kept, f)
			return nil
		})
	}()
	start := time.Now()
	r := v.send(ctx, c)
	select {
	case <-time.After(captureGrace):
	case <-ctx.Done():
	}
	stop()
	capErr := <-done

	owners, err := v.macOwners()
	if err != nil {
		return Outcome{Message: err.Error()}
	}
	owners[broadcastMAC] = lab.Broadcast
	name := func(mac string) string {
		if n := owners[mac]; n != "" {
			return n
		}
		return "?"
	}
	headers := make([]capture.Header, len(kept))
	for i, f := range kept {
		headers[i] = capture.HeaderOf(capture.Decode(f.Data))
		if i < maxFrameLines {
			r.Frames = append(r.Frames, fmt.Sprintf("%s  (%s > %s)", capture.Line(f, start), name(headers[i].SrcMAC.String()), name(headers[i].DstMAC.String())))
		}
	}
	if len(kept) > maxFrameLines {
		r.Frames = append(r.Frames, fmt.Sprintf("... and %d more", len(kept)-maxFrameLines))
	}
	var problems []string
	if capErr != nil {
		problems = append(problems, fmt.Sprintf("capture on %s %s: %v", cp.Node, cp.Dev, capErr))
	}
	problems = append(problems, JudgeFrames(c.Expect.Frames, headers, owners)...)
	if len(problems) > 0 {
		if r.Message != "" {
			problems = append([]string{r.Message}, problems...)
		}
		r.Passed, r.Skipped, r.Message = false, false, strings.Join(problems, "; ")
	}
	return r
}

// JudgeFrames compares a capture's frames with what a check expects of them;
// owners maps MAC addresses to the nodes that hold them (and the broadcast
// address to lab.Broadcast). It returns one
// problem per expectation not met.
func JudgeFrames(want []lab.FrameMatch, got []capture.Header, owners map[string]string) []string {
	var problems []string
	for _, m := range want {
		n := 0
		for _, h := range got {
			if frameMatches(m, h, owners) {
				n++
			}
		}
		switch {
		case m.Count == nil && n == 0:
			problems = append(problems, fmt.Sprintf("no frame %s in the capture (%s)", m, capture.Frames(len(got))))
		case m.Count != nil && n != *m.Count:
			problems = append(problems, fmt.Sprintf("%s %s, expected %d", capture.Frames(n), m, *m.Count))
		}
	}
	return problems
}

func frameMatches(m lab.FrameMatch, h capture.Header, owners map[string]string) bool {
	if m.From != "" && owners[h.SrcMAC.String()] != m.From {
		return false
	}
	if m.To != "" && owners[h.DstMAC.String()] != m.To {
		return false
	}
	addr := func(want, have netip.Addr) bool { return !want.IsValid() || want == have }
	return addr(m.Src, h.Src) && addr(m.Dst, h.Dst) && addr(m.InnerSrc, h.InnerSrc) && addr(m.InnerDst, h.InnerDst)
}
