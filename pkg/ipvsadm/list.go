// Package ipvsadm speaks ipvsadm's languages: it parses the rules students write
// (ipvsadm's command lines, as `ipvsadm-save -n` prints them) into lvslab's service
// model, and prints a live IPVS table the way `ipvsadm -Ln` and `ipvsadm-save -n` do.
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
	"syscall"

	"github.com/lvslab/lvslab/pkg/apply"
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
		f, err := os.Open("/proc/thread-self/net/ip_vs")
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

// Model returns the table as lvslab's service model, real servers in the kernel's
// list order.
func (t *Table) Model() []apply.Service {
	var out []apply.Service
	for _, e := range t.Services {
		k := e.Service
		v6 := k.AddressFamily == syscall.AF_INET6
		s := apply.Service{
			FWMark:     k.FWMark,
			Scheduler:  k.SchedName,
			SchedFlags: apply.SchedFlagNames(k.SchedName, k.Flags),
			Persistent: k.Flags&apply.FlagPersistent != 0,
			Netmask:    apply.NetmaskFromKernel(k.Netmask, v6),
		}
		if s.Persistent {
			s.Timeout = k.Timeout
		}
		if k.FWMark != 0 {
			s.IPv6 = v6
		} else {
			s.Protocol = strings.ToLower(protoName(k.Protocol))
			s.Addr = netip.MustParseAddrPort(addrPort(k.Address, k.Port))
		}
		for _, d := range e.Destinations {
			s.Servers = append(s.Servers, apply.Server{
				Addr:   netip.MustParseAddrPort(addrPort(d.Address, d.Port)),
				Method: apply.MethodOf(d.ConnectionFlags),
				Weight: d.Weight,
				Upper:  d.UpperThreshold,
				Lower:  d.LowerThreshold,
			})
		}
		out = append(out, s)
	}
	return out
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
		if f := apply.SchedFlagNames(s.SchedName, s.Flags); len(f) > 0 {
			fmt.Fprintf(bw, " (%s)", strings.Join(f, ","))
		}
		if s.Flags&apply.FlagPersistent != 0 {
			fmt.Fprintf(bw, " persistent %d", s.Timeout)
			v6 := s.AddressFamily == syscall.AF_INET6
			bits := apply.NetmaskFromKernel(s.Netmask, v6)
			if v6 && bits != 128 {
				fmt.Fprintf(bw, " mask %d", bits)
			} else if !v6 && bits != 32 {
				fmt.Fprintf(bw, " mask %s", net.IP(net.CIDRMask(bits, 32)))
			}
		}
		fmt.Fprintln(bw)
		for _, d := range e.Destinations {
			fmt.Fprintf(bw, "  -> %-28s %-7s %-6d %-10d %-10d\n",
				addrPort(d.Address, d.Port), forwardName(d.ConnectionFlags), d.Weight, d.ActiveConnections, d.InactiveConnections)
		}
	}
	return bw.Flush()
}
