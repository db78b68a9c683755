package engine

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// ExecResult is what a command run in a container gave.
type ExecResult struct {
	Stdout, Stderr string
	Code           int // its exit status
}

// Exec runs argv in a running container and waits for it to end.
func Exec(ctx context.Context, cli client.ContainerAPIClient, id string, argv []string) (ExecResult, error) {
	var r ExecResult
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return r, fmt.Errorf("exec %q in %.12s: %w", argv, id, err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		return r, fmt.Errorf("exec %q in %.12s: attach: %w", argv, id, err)
	}
	defer att.Close()
	var out, errOut bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &errOut, att.Reader); err != nil {
		return r, fmt.Errorf("exec %q in %.12s: output: %w", argv, id, err)
	}
	r.Stdout, r.Stderr = out.String(), errOut.String()
	// The output ends as the process does; its status may follow a moment later.
	for {
		st, err := cli.ContainerExecInspect(ctx, ex.ID)
		if err != nil {
			return r, fmt.Errorf("exec %q in %.12s: inspect: %w", argv, id, err)
		}
		if !st.Running {
			r.Code = st.ExitCode
			return r, nil
		}
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("exec %q in %.12s: %w", argv, id, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
