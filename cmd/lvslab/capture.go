package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/capture"
	"github.com/spf13/cobra"
)

// CaptureOptions are lvslab capture's.
type CaptureOptions struct {
	Lab     string // needed when several labs have the node
	Node    string
	Dev     string
	Count   int
	Timeout time.Duration
	Filter  string
	Write   string // a pcap file; "" prints a line per frame
	// While is a command run in the node once the capture has begun; the
	// capture ends a moment after it exits (its output goes to stderr).
	While []string
	// From is the node While runs in; "" is the captured node.
	From string
}

func (a *app) captureCommand() *cobra.Command {
	var o CaptureOptions
	c := &cobra.Command{
		Use:   "capture [--lab LAB] NODE IFACE [-c N] [--filter EXPR] [--timeout D] [-w FILE.pcap] [-- COMMAND...]",
		Short: "capture an interface's frames in a node: a pcap file, or one decoded line per frame",
		Long: `Capture the frames through one interface of a node, from an AF_PACKET socket
in the node's namespace (no tcpdump needed). With -w, write them as a pcap
file any Wireshark opens; without, print one line per frame: the seconds since
the capture began, in or out, the Ethernet addresses (LVS-DR rewrites them and
nothing else), and ARP who-has / is-at with MACs, TCP flags, IP-in-IP (LVS-TUN).

The filter is a part of tcpdump's language, read by lvslab: arp, ip, ip6, tcp,
udp, icmp, ipip, [src|dst] host ADDR, [src|dst] port N, ether [src|dst] host
MAC, joined by not, and, or and parentheses. The capture ends after -c frames,
after --timeout, or on Ctrl-C. "capturing on NODE IFACE" on standard error says
when the socket is open. With a COMMAND after --, lvslab runs it in the node
once the socket is open (its output on standard error; --from runs it in
another node of the lab) and ends the capture half a second after it exits:
one command line captures an exchange.`,
		Example: "  lvslab capture client eth1 --filter arp -- arping -c 1 -i eth1 203.0.113.1\n" +
			"  lvslab capture client eth1 --filter arp -c 2\n" +
			"  lvslab capture web1 eth1 --filter 'tcp and port 80' -c 10 -w dr.pcap\n" +
			"  lvslab capture web1 eth1 --filter syn --from client -- curl -s http://203.0.113.1/",
		Args: func(cmd *cobra.Command, args []string) error {
			dash := cmd.ArgsLenAtDash()
			if (dash < 0 && len(args) != 2) || (dash >= 0 && (dash != 2 || len(args) == 2)) {
				return usageError{errors.New("capture: give a node and one of its interfaces, and after -- a command if any")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node, o.Dev, o.While = args[0], args[1], args[2:]
			if o.Filter != "" {
				if _, err := capture.ParseFilter(o.Filter); err != nil {
					return usageError{fmt.Errorf("--filter: %w", err)}
				}
			}
			if o.From != "" && len(o.While) == 0 {
				return usageError{fmt.Errorf("--from %s: give the command to run there after --", o.From)}
			}
			if o.Count < 0 {
				return usageError{fmt.Errorf("-c %d: give a count of 1 or more (0: no limit)", o.Count)}
			}
			return a.backend.Capture(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Lab, "lab", "", "the lab (needed when several labs have the node)")
	c.Flags().IntVarP(&o.Count, "count", "c", 0, "stop after this many frames (0: no limit)")
	c.Flags().DurationVar(&o.Timeout, "timeout", 0, "stop after this long (0: no limit)")
	c.Flags().StringVar(&o.Filter, "filter", "", "which frames: arp, tcp and port 80, host 203.0.113.1, not arp, ...")
	c.Flags().StringVarP(&o.Write, "write", "w", "", "write a pcap file instead of decoded lines")
	c.Flags().StringVar(&o.From, "from", "", "run the command after -- in this node of the lab (default: the captured node)")
	return labCommand(c)
}

// whileGrace is how long a capture goes on after its command exits.
const whileGrace = 500 * time.Millisecond

func (b *localBackend) Capture(ctx context.Context, o CaptureOptions) error {
	l, err := findLab(o.Lab, o.Node)
	if err != nil {
		return err
	}
	n, ok := l.Handles()[o.Node]
	if !ok {
		return fmt.Errorf("lab %s has no node %s with a namespace", l.Name, o.Node)
	}
	from := o.Node
	if o.From != "" {
		if _, ok := l.Handles()[o.From]; !ok {
			return usageError{fmt.Errorf("--from %s: lab %s has no such node", o.From, l.Name)}
		}
		from = o.From
	}
	opts := capture.Options{Count: o.Count, Timeout: o.Timeout}
	if o.Filter != "" {
		if opts.Filter, err = capture.ParseFilter(o.Filter); err != nil {
			return usageError{fmt.Errorf("--filter: %w", err)}
		}
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	s, err := capture.Start(n, o.Dev)
	if err != nil {
		return err
	}
	defer s.Close()
	var each func(capture.Frame) error
	frames := 0
	if o.Write != "" {
		f, err := os.Create(o.Write)
		if err != nil {
			return err
		}
		defer f.Close()
		bw := bufio.NewWriter(f)
		w, err := capture.NewPcapWriter(bw)
		if err != nil {
			return err
		}
		defer bw.Flush()
		each = func(fr capture.Frame) error { frames++; return w.Write(fr) }
	} else {
		start := time.Now()
		each = func(fr capture.Frame) error {
			frames++
			_, err := fmt.Fprintln(b.app.stdout, capture.Line(fr, start))
			return err
		}
	}
	b.app.logf("capturing on %s %s\n", o.Node, o.Dev)
	if len(o.While) > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		quiet := *b.app
		quiet.stdout = b.app.stderr // the command's output must not mix with the frames
		go func() {
			if err := (&localBackend{app: &quiet}).Exec(ctx, ExecOptions{Lab: l.Name, Node: from, Argv: o.While}); err != nil {
				b.app.logf("%s: %v\n", strings.Join(o.While, " "), err)
			}
			select {
			case <-time.After(whileGrace): // the last answers arrive
			case <-ctx.Done():
			}
			cancel()
		}()
	}
	err = s.Run(ctx, opts, each)
	b.app.logf("%s\n", capture.Frames(frames))
	return err
}
