// Package webd is the lab's built-in web server: one process serves every web node
// of a lab, each on listening sockets opened inside that node's namespace, and
// answers every request with the node's name, as the seed lab's test pages do.
package webd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// EnvListeners tells the daemon which inherited descriptors belong to which node:
// "web1,web2" means fd 3 serves web1 and fd 4 serves web2.
const EnvListeners = "LVSLAB_WEBD_LISTENERS"

// Handler answers every request with name and a newline, and names the node in
// the X-Served-By header.
func Handler(name string) http.Handler {
	body := []byte(name + "\n")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", name)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
}

// Serve serves each listener with the handler of its node until ctx ends.
func Serve(ctx context.Context, listeners map[string][]net.Listener) error {
	errc := make(chan error, 1)
	var servers []*http.Server
	for name, ls := range listeners {
		for _, l := range ls {
			srv := &http.Server{Handler: Handler(name), ReadHeaderTimeout: 10 * time.Second}
			srv.SetKeepAlivesEnabled(false) // one request per connection, as the lab's clients make
			servers = append(servers, srv)
			go func() {
				if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
					select {
					case errc <- fmt.Errorf("webd %s on %s: %w", name, l.Addr(), err):
					default:
					}
				}
			}()
		}
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	for _, s := range servers {
		s.Close()
	}
	return err
}

// Main is the daemon's entry point: it serves the listeners it inherited.
func Main(ctx context.Context) error {
	names := strings.Split(os.Getenv(EnvListeners), ",")
	if len(names) == 0 || names[0] == "" {
		return fmt.Errorf("webd: %s is empty", EnvListeners)
	}
	listeners := map[string][]net.Listener{}
	for i, name := range names {
		f := os.NewFile(uintptr(3+i), "listener-"+name)
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("webd: listener %d (%s): %w", i, name, err)
		}
		listeners[name] = append(listeners[name], l)
	}
	return Serve(ctx, listeners)
}
