package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/spf13/cobra"
)

func (a *app) exportCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "export",
		Short: "write a scenario's configuration in another tool's format",
		Args:  cobra.NoArgs,
	}
	c.AddCommand(a.exportKeepalivedCommand())
	return c
}

func (a *app) exportKeepalivedCommand() *cobra.Command {
	var node string
	c := &cobra.Command{
		Use:   "keepalived [--node NODE] SCENARIO",
		Short: "print the keepalived.conf of a scenario's directors: VRRP instances and one virtual_server per IPVS service",
		Long: `Print the keepalived.conf that would give a scenario's node its VRRP instances
(the node's keepalived section) and its IPVS table (one virtual_server per
service, one real_server per real server, with the health check of the node's
keepalived section; without one, keepalived counts every real server as up). Without
--node, every node with IPVS services or a keepalived section is printed, each
under a "# node NAME" line. Nothing is started; no lab is needed.`,
		Args: exactArgs(1, "a scenario file"),
		RunE: func(_ *cobra.Command, args []string) error {
			s, err := scenario.Load(args[0])
			if err != nil {
				return err
			}
			return exportKeepalived(a.stdout, s, node)
		},
	}
	c.Flags().StringVar(&node, "node", "", "only this node (default: every node with IPVS services or keepalived)")
	return c
}

// exportKeepalived writes the keepalived.conf of node, or of every node with
// IPVS services or a keepalived section.
func exportKeepalived(w io.Writer, s *scenario.Scenario, node string) error {
	var nodes []lab.NodeSpec
	if node != "" {
		if _, ok := s.Topology.Nodes[node]; !ok {
			return usageError{fmt.Errorf("--node %s: not a node of %s", node, s.File)}
		}
		n, _ := s.Spec.Node(node)
		if len(n.Services) == 0 && n.Keepalived == nil {
			return fmt.Errorf("node %s: %s gives it no IPVS services and no keepalived section", node, s.File)
		}
		nodes = append(nodes, n)
	}
	for _, n := range s.Spec.Nodes {
		if node == "" && (len(n.Services) > 0 || n.Keepalived != nil) {
			nodes = append(nodes, n)
		}
	}
	if len(nodes) == 0 {
		return fmt.Errorf("%s: no node has IPVS services or a keepalived section", s.File)
	}
	var b strings.Builder
	for i, n := range nodes {
		if len(nodes) > 1 {
			if i > 0 {
				b.WriteString("\n")
			}
			fmt.Fprintf(&b, "# node %s\n", n.Name)
		}
		out, err := keepalived.Marshal(nodeConfig(n))
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		fmt.Fprintf(&b, "# keepalived.conf of node %s, written by lvslab export from %s\n", n.Name, s.File)
		if !n.Keepalived.ManagesIPVS() {
			b.WriteString("# no health checks: the scenario has none, so keepalived counts every real server as up\n")
		}
		if len(n.Marks) > 0 {
			b.WriteString("# firewall marks are not keepalived's: set them with iptables or nftables as the scenario does\n")
		}
		b.Write(out)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// nodeConfig is the keepalived configuration of a node: its VRRP instances
// and its IPVS services, without health checks; the router_id is the node's
// name.
func nodeConfig(n lab.NodeSpec) *keepalived.Config {
	c := keepalived.FromNode(n)
	if !n.Keepalived.ManagesIPVS() {
		// lvslab holds that table; keepalived would, with bare virtual servers.
		for _, svc := range n.Services {
			c.VirtualServers = append(c.VirtualServers, keepalived.NewVirtualServer(svc))
		}
	}
	return c
}
