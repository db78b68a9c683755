// Package ipvsadm speaks ipvsadm's languages: it prints a live IPVS table the way
// `ipvsadm -Ln` does.
package ipvsadm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/moby/ipvs"
)

// Table is a snapshot of one namespace's IPVS table.
type Table struct {
	Header   string // first line of /proc/net/ip_vs, e.g. "IP Virtual Server version 1.2.1 (size=4096)"
	Services []ServiceEntry
}

// ServiceEntry is a service with its real servers, in the kernel's list order.
type ServiceEntry struct {
	Service      *ipvs.Service
	Destinations []*ipvs.Destination
}

// Read takes a snapshot of the IPVS table in n's namespace.
func Read(n node.Node) (*Table, error) {
	h, err := ipvs.New(n.NSPath)
	if err != nil {
		return nil, fmt.Errorf("%s: IPVS netlink: %w", n.Name, err)
	}
	defer h.Close()
	t := &Table{}
	err = n.Do(func() error {
		f, err := os.Open("/proc/net/ip_vs")
		if err != nil {
			return err
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		t.Header = strings.TrimSpace(line)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", n.Name, err)
	}
	svcs, err := h.GetServices()
	if err != nil {
		return nil, fmt.Errorf("%s: list IPVS services: %w", n.Name, err)
	}
	sort.SliceStable(svcs, func(i, j int) bool { return serviceSortKey(svcs[i]) < serviceSortKey(svcs[j]) })
	for _, s := range svcs {
		ds, err := h.GetDestinations(s)
		if err != nil {
			return nil, fmt.Errorf("%s: list real servers: %w", n.Name, err)
		}
		t.Services = append(t.Services, ServiceEntry{Service: s, Destinations: ds})
	}
	return t, nil
}

func serviceSortKey(s *ipvs.Service) string {
	if s.FWMark != 0 {
		return fmt.Sprintf("2 %010d", s.FWMark)
	}
	return fmt.Sprintf("1 %s %s", protoName(s.Protocol), addrPort(s.Address, s.Port))
}

func protoName(p uint16) string {
	switch p {
	case 6:
		return "TCP"
	case 17:
		return "UDP"
	case 132:
		return "SCTP"
	}
	return fmt.Sprintf("%d", p)
}

func addrPort(ip net.IP, port uint16) string {
	a, _ := netip.AddrFromSlice(ip)
	return netip.AddrPortFrom(a.Unmap(), port).String()
}

func forwardName(flags uint32) string {
	switch flags & ipvs.ConnectionFlagFwdMask {
	case ipvs.ConnectionFlagMasq:
		return "Masq"
	case ipvs.ConnectionFlagLocalNode:
		return "Local"
	case ipvs.ConnectionFlagTunnel:
		return "Tunnel"
	case ipvs.ConnectionFlagDirectRoute:
		return "Route"
	}
	return "?"
}

// WriteList prints t as `ipvsadm -Ln` does.
func WriteList(w io.Writer, t *Table) error {
	bw := bufio.NewWriter(w)
	hdr := t.Header
	if hdr == "" {
		hdr = "IP Virtual Server"
	}
	fmt.Fprintln(bw, hdr)
	fmt.Fprintln(bw, "Prot LocalAddress:Port Scheduler Flags")
	fmt.Fprintln(bw, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn")
	for _, e := range t.Services {
		s := e.Service
		if s.FWMark != 0 {
			fmt.Fprintf(bw, "FWM  %d %s", s.FWMark, s.SchedName)
		} else {
			fmt.Fprintf(bw, "%s  %s %s", protoName(s.Protocol), addrPort(s.Address, s.Port), s.SchedName)
		}
		if s.Flags&0x1 != 0 {
			fmt.Fprintf(bw, " persistent %d", s.Timeout)
		}
		fmt.Fprintln(bw)
		for _, d := range e.Destinations {
			fmt.Fprintf(bw, "  -> %-28s %-7s %-6d %-10d %-10d\n",
				addrPort(d.Address, d.Port), forwardName(d.ConnectionFlags), d.Weight, d.ActiveConnections, d.InactiveConnections)
		}
	}
	return bw.Flush()
}
