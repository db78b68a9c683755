package image

import (
	"context"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// Init is a node container's first process (lvslab node-init, the image's
// command). It reaps every process orphaned into it, as a container's init
// must (keepalived's checkers and docker exec leave orphans), and returns when
// ctx ends: main ends it on SIGTERM, so docker stop takes no grace period. It
// is lvslab itself rather than a shell and sleep: one process start, and in
// the sandbox kernel every start costs about 0.1 s.
func Init(ctx context.Context) error {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGCHLD)
	defer signal.Stop(ch)
	for {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ch:
		}
	}
}
