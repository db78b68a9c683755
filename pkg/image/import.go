package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
)

// ErrNotFound: the engine has no node image of this version.
var ErrNotFound = errors.New("no node image in the engine (lvslab image build)")

// Import writes the node image and imports it into an engine as ref, with
// Cmd as its command (an imported image has none) and a PATH. It streams the
// archive: nothing is written to disk.
func Import(ctx context.Context, cli client.ImageAPIClient, ref string, o Options) (Stats, error) {
	pr, pw := io.Pipe()
	type result struct {
		st  Stats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := Write(ctx, pw, o)
		pw.CloseWithError(err)
		done <- result{st, err}
	}()
	cmd, _ := json.Marshal(Cmd())
	body, err := cli.ImageImport(ctx, image.ImportSource{Source: pr, SourceName: "-"}, ref, image.ImportOptions{
		Changes: []string{
			"CMD " + string(cmd),
			"ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"LABEL org.opencontainers.image.title=lvslab-node",
		},
	})
	if err != nil {
		pr.CloseWithError(err)
		w := <-done
		return w.st, errors.Join(fmt.Errorf("image: import %s: %w", ref, err), w.err)
	}
	defer body.Close()
	msgErr := readMessages(body)
	pr.Close()
	w := <-done
	if w.err != nil {
		return w.st, w.err
	}
	if msgErr != nil {
		return w.st, fmt.Errorf("image: import %s: %w", ref, msgErr)
	}
	return w.st, nil
}

// readMessages reads the engine's progress stream to its end and returns the
// error it reports, if any.
func readMessages(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Error       string `json:"error"`
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return fmt.Errorf("read the engine's answer: %w", err)
		}
		if m.ErrorDetail != nil && m.ErrorDetail.Message != "" {
			return errors.New(m.ErrorDetail.Message)
		}
		if m.Error != "" {
			return errors.New(m.Error)
		}
	}
}

// Check reports whether the engine has ref, with ErrNotFound when it does not.
func Check(ctx context.Context, cli client.ImageAPIClient, ref string) error {
	_, err := cli.ImageInspect(ctx, ref)
	if errdefs.IsNotFound(err) {
		return fmt.Errorf("image %s: %w", ref, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	return nil
}
