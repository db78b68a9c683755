package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/state"
)

// Outside the sandbox a container lab needs the host's engine: none answering
// is a clear error, before anything is made.
func TestContainerlabWithoutEngine(t *testing.T) {
	t.Setenv(sandbox.EnvInSandbox, "")
	t.Setenv("DOCKER_HOST", "unix://"+t.TempDir()+"/no-docker.sock")
	r := &Runner{Store: state.Store{Dir: t.TempDir() + "/labs"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := r.RuntimeFor(ctx, lab.RuntimeContainerlab, true)
	if err == nil || !strings.Contains(err.Error(), "no Docker engine answers at unix://") || !strings.Contains(err.Error(), "no-docker.sock") {
		t.Fatalf("error %v", err)
	}
	if _, err := r.RuntimeFor(ctx, "podman", true); err == nil || !strings.Contains(err.Error(), `runtime "podman"`) {
		t.Fatalf("unknown runtime: %v", err)
	}
}
