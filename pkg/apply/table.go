package apply

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/moby/ipvs"
)

// ReadTable takes a snapshot of the IPVS table in n's namespace, in the kernel's
// order (real servers as the schedulers walk them), with their live connection
// counts. pkg/ipvsadm prints it in ipvsadm's own order.
func ReadTable(n node.Node) (*lab.Table, error) {
	h, err := ipvs.New(n.NSPath)
	if err != nil {
		return nil, fmt.Errorf("%s: IPVS netlink: %w", n.Name, err)
	}
	defer h.Close()
	t := &lab.Table{}
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
	for _, k := range svcs {
		ds, err := h.GetDestinations(k)
		if err != nil {
			return nil, fmt.Errorf("%s: list real servers: %w", n.Name, err)
		}
		ts := lab.TableService{Service: fromKernelService(k), Connections: k.Stats.Connections}
		for _, d := range ds {
			ts.Servers = append(ts.Servers, fromKernelDest(d))
			ts.Conns = append(ts.Conns, lab.ServerConns{Active: uint32(d.ActiveConnections), Inactive: uint32(d.InactiveConnections)})
		}
		t.Services = append(t.Services, ts)
	}
	return t, nil
}

// Recreate re-creates one of n's IPVS services (see RecreateService).
func Recreate(n node.Node, want lab.Service) error {
	h, err := ipvs.New(n.NSPath)
	if err != nil {
		return fmt.Errorf("%s: IPVS netlink: %w", n.Name, err)
	}
	defer h.Close()
	if err := RecreateService(h, want); err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	return nil
}
