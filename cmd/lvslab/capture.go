package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
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
}

func (a *app) captureCommand() *cobra.Command {
	var o CaptureOptions
	c := &cobra.Command{
		Use:   "capture [--lab LAB] NODE IFACE [-c N] [--filter EXPR] [--timeout D] [-w FILE.pcap]",
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
when the socket is open.`,
		Example: "  lvslab capture client eth1 --filter arp -c 2\n" +
			"  lvslab capture web1 eth1 --filter 'tcp and port 80' -c 10 -w dr.pcap",
		Args: exactArgs(2, "a node and one of its interfaces"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Node, o.Dev = args[0], args[1]
			if o.Filter != "" {
				if _, err := capture.ParseFilter(o.Filter); err != nil {
					return usageError{fmt.Errorf("--filter: %w", err)}
				}
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
	return labCommand(c)
}

func (b *localBackend) Capture(ctx context.Context, o CaptureOptions) error {
	l, err := findLab(o.Lab, o.Node)
	if err != nil {
		return err
	}
	n, ok := l.Handles()[o.Node]
	if !ok {
		return fmt.Errorf("lab %s has no node %s with a namespace", l.Name, o.Node)
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
	err = s.Run(ctx, opts, each)
	b.app.logf("%d frames\n", frames)
	return err
}
