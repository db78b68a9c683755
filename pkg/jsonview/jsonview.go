// Package jsonview is lvslab's machine-readable output: the shapes that
// lvslab status --json, lvslab ipvs --json and lvslab verify --json print.
// They are stable: a field is added, never renamed or removed, within one
// schema version, and the JSON schemas under docs/schema (draft 2020-12)
// describe them; the tests validate real output against them.
package jsonview

import (
	"github.com/lvslab/lvslab/pkg/lab"
)

// SchemaVersion is the version of the shapes; it is in each document's
// $id and changes only when a field would change meaning.
const SchemaVersion = 1

// Lab is one lab in lvslab status --json.
type Lab struct {
	Name      string    `json:"name"`
	Runtime   string    `json:"runtime"`
	Scenario  string    `json:"scenario,omitempty"`
	Topology  string    `json:"topology"`
	Director  string    `json:"director,omitempty"`
	Nodes     []Node    `json:"nodes"`
	Processes []Process `json:"processes"`
	// IPVS is the director's table; absent when the lab has no director.
	IPVS *Table `json:"ipvs,omitempty"`
}

// Node is a lab node and its addresses as the kernel has them.
type Node struct {
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace,omitempty"` // empty for a container lab's bridge
	Addresses []string `json:"addresses"`           // "eth1 203.0.113.1/24"
}

// Process is a process lvslab started in a node.
type Process struct {
	Role    string `json:"role"`
	Node    string `json:"node,omitempty"`
	Pid     int    `json:"pid"`
	Running bool   `json:"running"`
}

// Table is a director's IPVS table, as ipvs --json prints it.
type Table struct {
	Version  string    `json:"version"` // the kernel's header line: "IP Virtual Server version 1.2.1 (size=4096)"
	Services []Service `json:"services"`
}

// Service is a virtual service and its live counts.
type Service struct {
	Key        string   `json:"key"`                // "tcp:203.0.113.1:80", "fwm:10"
	Protocol   string   `json:"protocol,omitempty"` // tcp, udp, sctp; absent for a firewall mark
	Address    string   `json:"address,omitempty"`  // "203.0.113.1:80"; absent for a firewall mark
	FWMark     uint32   `json:"fwmark,omitempty"`
	IPv6       bool     `json:"ipv6,omitempty"`
	Scheduler  string   `json:"scheduler"`
	Flags      []string `json:"flags,omitempty"`
	Persistent bool     `json:"persistent,omitempty"`
	Timeout    uint32   `json:"timeout,omitempty"` // persistence, seconds
	Netmask    int      `json:"netmask,omitempty"` // persistence granularity, a prefix length
	// Connections is the kernel's count of connections scheduled (it folds
	// it in every 2 s).
	Connections uint32   `json:"connections"`
	Servers     []Server `json:"servers"`
}

// Server is a real server of a service with its live counts.
type Server struct {
	Address  string `json:"address"`
	Method   string `json:"method"` // nat, dr, tunnel, local
	Weight   int    `json:"weight"`
	Upper    uint32 `json:"upper,omitempty"`
	Lower    uint32 `json:"lower,omitempty"`
	Active   uint32 `json:"active"`
	Inactive uint32 `json:"inactive"`
}

// FromTable is the JSON view of a director's table.
func FromTable(t *lab.Table) *Table {
	out := &Table{Version: t.Header, Services: []Service{}}
	for _, s := range t.Services {
		v := Service{Key: s.Key(), Protocol: string(s.Protocol), FWMark: s.FWMark, IPv6: s.FWMark != 0 && s.IPv6,
			Scheduler: string(s.Scheduler), Persistent: s.Persistent, Connections: s.Connections, Servers: []Server{}}
		if s.FWMark == 0 {
			v.Address = s.Addr.String()
		}
		if s.Persistent {
			v.Timeout, v.Netmask = s.Timeout, s.Netmask
		}
		for _, f := range s.SchedFlags {
			v.Flags = append(v.Flags, string(f))
		}
		for i, srv := range s.Servers {
			sv := Server{Address: srv.Addr.String(), Method: string(srv.Method), Weight: srv.Weight, Upper: srv.Upper, Lower: srv.Lower}
			if i < len(s.Conns) {
				sv.Active, sv.Inactive = s.Conns[i].Active, s.Conns[i].Inactive
			}
			v.Servers = append(v.Servers, sv)
		}
		out.Services = append(out.Services, v)
	}
	return out
}
