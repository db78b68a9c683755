package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/spf13/cobra"
)

// ForwardOptions are lvslab forward's.
type ForwardOptions struct {
	Lab    string // needed when several labs have the node
	Listen string // host address and port, 127.0.0.1:8080
	Node   string
	Target string // address:port, dialled from inside Node
}

func (a *app) forwardCommand() *cobra.Command {
	var o ForwardOptions
	c := &cobra.Command{
		Use:   "forward [--lab LAB] [ADDR:]PORT NODE TARGET",
		Short: "listen on this host and make each connection from inside a node to a target (a browser on the lab)",
		Long: `Listen on this host (127.0.0.1 unless ADDR is given) and, for each connection
accepted, open one from inside NODE to TARGET and pass the bytes both ways. A
browser on this host then reaches the lab as the node would:

  lvslab forward 8080 client 203.0.113.1:80      # then open http://127.0.0.1:8080/

Each browser connection is one connection from the client node, so the
director schedules each anew. lvslab's web servers answer a browser with an
HTML page that asks for no icon and close the connection after each answer:
one reload is one connection, and round robin shows web1, web2, web1...
(A browser's own keep-alive would otherwise send every reload down the same
connection to the same server, and its request for /favicon.ico would take
every other turn.) Where the lab lives in the sandbox kernel, each connection
goes through the sandbox's agent. Ctrl-C stops.`,
		Args: exactArgs(3, "[ADDR:]PORT, a node and a target address:port"),
		RunE: func(cmd *cobra.Command, args []string) error {
			listen, err := listenAddr(args[0])
			if err != nil {
				return usageError{err}
			}
			if _, err := netip.ParseAddrPort(args[2]); err != nil {
				return usageError{fmt.Errorf("target %q: give address:port (203.0.113.1:80, [2001:db8::1]:80)", args[2])}
			}
			o.Listen, o.Node, o.Target = listen, args[1], args[2]
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			return a.backend.Forward(ctx, o)
		},
	}
	c.Flags().StringVar(&o.Lab, "lab", "", "the lab (needed when several labs have the node)")
	return labCommand(c)
}

// listenAddr reads [ADDR:]PORT; the address defaults to 127.0.0.1.
func listenAddr(s string) (string, error) {
	if _, err := strconv.ParseUint(s, 10, 16); err == nil { // 0: any free port, said on standard error
		return net.JoinHostPort("127.0.0.1", s), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		if _, perr := strconv.ParseUint(port, 10, 16); perr != nil {
			err = errors.New("bad port")
		} else if _, aerr := netip.ParseAddr(host); aerr != nil {
			err = aerr
		}
	}
	if err != nil {
		return "", fmt.Errorf("%q: give PORT or ADDR:PORT (8080, 0.0.0.0:8080)", s)
	}
	return s, nil
}

// serveForward accepts connections on o.Listen until ctx ends and hands each
// to relay, which must close it.
func (a *app) serveForward(ctx context.Context, o ForwardOptions, relay func(net.Conn)) error {
	l, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return err
	}
	context.AfterFunc(ctx, func() { l.Close() })
	a.logf("forwarding %s to %s from %s (Ctrl-C stops)\n", l.Addr(), o.Target, o.Node)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Ctrl-C ends every connection, and one that has sent nothing yet.
			defer context.AfterFunc(ctx, func() { c.Close() })()
			// The node's connection is made when the browser sends its first
			// bytes: a browser's speculative connection that never sends
			// anything must not take a turn of the director's scheduler.
			first := make([]byte, 4096)
			n, err := c.Read(first)
			if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
				c.Close()
				return
			}
			relay(&prefixed{Conn: c, r: io.MultiReader(bytes.NewReader(first[:n]), c)})
		}()
	}
}

// prefixed is a connection whose first bytes were read already.
type prefixed struct {
	net.Conn
	r io.Reader
}

func (p *prefixed) Read(b []byte) (int, error) { return p.r.Read(b) }

// splice passes bytes both ways between a and b until b's side is done (the
// target has answered and closed), passing a's end of input on as a half
// close. Closing a ends the other direction; standard input, which cannot be
// closed so, ends with the relay process.
func splice(a io.ReadWriteCloser, b net.Conn) {
	go func() {
		_, _ = io.Copy(b, a)
		if tc, ok := b.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	_, _ = io.Copy(a, b)
	a.Close()
	b.Close()
}

func (b *localBackend) Forward(ctx context.Context, o ForwardOptions) error {
	l, err := findLab(o.Lab, o.Node)
	if err != nil {
		return fmt.Errorf("forward: node %s: %w", o.Node, err)
	}
	n, ok := l.Handles()[o.Node]
	if !ok {
		return fmt.Errorf("forward: lab %s has no node %s with a namespace", l.Name, o.Node)
	}
	return b.app.serveForward(ctx, o, func(c net.Conn) {
		t, err := dialIn(ctx, n, o.Target)
		if err != nil {
			b.app.logf("forward: %s: %v\n", o.Target, err)
			c.Close()
			return
		}
		splice(c, t)
	})
}

func (b *sandboxBackend) Forward(ctx context.Context, o ForwardOptions) error {
	c, err := sandbox.Dial(b.dir)
	if err != nil {
		return fmt.Errorf("forward: node %s: %w", o.Node, errNoKernel)
	}
	defer c.Close()
	argv := []string{self(), "relay", o.Node, o.Target}
	if o.Lab != "" {
		argv = append(argv, "--lab", o.Lab)
	}
	return b.app.serveForward(ctx, o, func(conn net.Conn) {
		defer conn.Close()
		var stderr strings.Builder
		code, err := c.Exec(ctx, sandbox.Request{Argv: argv, Env: sandbox.HostEnv()}, conn, conn, &stderr)
		if err != nil || code != 0 {
			b.app.logf("forward: %s from %s: %v %s\n", o.Target, o.Node, err, strings.TrimSpace(stderr.String()))
		}
	})
}

// relayCommand is forward's far end inside the sandbox kernel: one
// connection from inside a node to a target, its bytes on standard input
// and output.
func (a *app) relayCommand() *cobra.Command {
	var labName string
	c := &cobra.Command{
		Use:    "relay [--lab LAB] NODE TARGET",
		Hidden: true,
		Args:   exactArgs(2, "a node and a target"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := findLab(labName, args[0])
			if err != nil {
				return fmt.Errorf("relay: node %s: %w", args[0], err)
			}
			n, ok := l.Handles()[args[0]]
			if !ok {
				return fmt.Errorf("relay: lab %s has no node %s with a namespace", l.Name, args[0])
			}
			t, err := dialIn(cmd.Context(), n, args[1])
			if err != nil {
				return err
			}
			splice(stdio{a.stdin, a.stdout}, t)
			return nil
		},
	}
	c.Flags().StringVar(&labName, "lab", "", "the lab")
	return c
}

// dialIn opens a TCP connection to target from inside node n.
func dialIn(ctx context.Context, n node.Node, target string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, "tcp", target)
		return err
	})
	return c, err
}

// stdio is standard input and output as one stream.
type stdio struct {
	io.Reader
	io.Writer
}

func (stdio) Close() error { return nil }
