// Package ipvsadm speaks ipvsadm's languages: it parses the rules students write
// (ipvsadm's command lines, as `ipvsadm-save -n` prints them) into lvslab's typed
// services, and prints a table the way `ipvsadm -Ln` and `ipvsadm-save -n` do.
// It is text in and text out: reading the kernel is pkg/apply's job.
package ipvsadm

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"github.com/lvslab/lvslab/pkg/lab"
)

// WriteList prints t as `ipvsadm -Ln` does, in ipvsadm's order (Sorted).
func WriteList(w io.Writer, t *lab.Table) error {
	t = Sorted(t)
	bw := bufio.NewWriter(w)
	hdr := t.Header
	if hdr == "" {
		hdr = "IP Virtual Server"
	}
	fmt.Fprintln(bw, hdr)
	fmt.Fprintln(bw, "Prot LocalAddress:Port Scheduler Flags")
	fmt.Fprintln(bw, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")
	for _, s := range t.Services {
		if s.FWMark != 0 {
			fmt.Fprintf(bw, "FWM  %d %s", s.FWMark, s.Scheduler)
		} else {
			fmt.Fprintf(bw, "%s  %s %s", strings.ToUpper(string(s.Protocol)), s.Addr, s.Scheduler)
		}
		if len(s.SchedFlags) > 0 {
			fmt.Fprintf(bw, " (%s)", joinFlags(s.SchedFlags))
		}
		if s.Persistent {
			fmt.Fprintf(bw, " persistent %d", s.Timeout)
			if s.Netmask != s.MaxNetmask() {
				fmt.Fprintf(bw, " mask %s", lab.NetmaskString(s.Netmask, s.Is6()))
			}
		}
		fmt.Fprintln(bw)
		for i, d := range s.Servers {
			var c lab.ServerConns
			if i < len(s.Conns) {
				c = s.Conns[i]
			}
			fmt.Fprintf(bw, "  -> %-28s %-7s %-6d %-10d %-10d\n",
				d.Addr, d.Method.ListName(), d.Weight, c.Active, c.Inactive)
		}
	}
	return bw.Flush()
}
