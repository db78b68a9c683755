package jsonview

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

func validator(t *testing.T) *Validator {
	t.Helper()
	v, err := NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Real verify --json output (two runs, one with steps, one with ARP
// replies) is valid under verify.schema.json; a changed field is not.
func TestVerifyOutputValid(t *testing.T) {
	v := validator(t)
	for _, f := range []string{"../report/testdata/nat-steps.json", "../report/testdata/dr-arp-flux.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := v.Validate("verify.schema.json", b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		bad := strings.Replace(string(b), `"passed"`, `"pass"`, 1)
		if err := v.Validate("verify.schema.json", []byte(bad)); err == nil {
			t.Errorf("%s with a renamed field: valid", f)
		}
	}
}

func table() *lab.Table {
	svc := lab.Service{Protocol: lab.TCP, Addr: netip.MustParseAddrPort("203.0.113.1:80"), Scheduler: lab.RR, Persistent: true, Timeout: 120, Netmask: 32,
		Servers: []lab.Server{{Addr: netip.MustParseAddrPort("198.51.100.11:80"), Method: lab.NAT, Weight: 1, Upper: 3, Lower: 1}}}
	mark := lab.Service{FWMark: 10, Scheduler: lab.WRR, Servers: []lab.Server{{Addr: netip.MustParseAddrPort("198.51.100.12:0"), Method: lab.DR, Weight: 2}}}
	return &lab.Table{Header: "IP Virtual Server version 1.2.1 (size=4096)", Services: []lab.TableService{
		{Service: svc, Connections: 7, Conns: []lab.ServerConns{{Active: 1, Inactive: 6}}},
		{Service: mark, Conns: []lab.ServerConns{{}}},
	}}
}

// A table's view: every field the kernel gives, valid under ipvs.schema.json,
// and inside a lab's status under status.schema.json.
func TestTableAndStatusValid(t *testing.T) {
	v := validator(t)
	tv := FromTable(table())
	if s := tv.Services[0]; s.Key != "tcp:203.0.113.1:80" || s.Address != "203.0.113.1:80" || s.Timeout != 120 || s.Servers[0].Inactive != 6 || s.Servers[0].Upper != 3 {
		t.Fatalf("%+v", s)
	}
	if s := tv.Services[1]; s.Key != "fwm:10" || s.Address != "" || s.FWMark != 10 || s.Servers[0].Method != "dr" {
		t.Fatalf("%+v", s)
	}
	b, err := Marshal(tv)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Validate("ipvs.schema.json", b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	st := []Lab{{Name: "nat-rr", Runtime: "netns", Topology: "/x/lvs-nat.clab.yml", Director: "director",
		Nodes:     []Node{{Name: "director", Kind: "linux", Namespace: "clab-nat-rr-director", Addresses: []string{"eth1 203.0.113.1/24"}}},
		Processes: []Process{{Role: "webd-web1", Node: "web1", Pid: 42, Running: true}}, IPVS: tv}}
	if b, err = Marshal(st); err != nil {
		t.Fatal(err)
	}
	if err := v.Validate("status.schema.json", b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if err := v.Validate("status.schema.json", []byte(`[{"name":"x"}]`)); err == nil {
		t.Fatal("a lab without its fields: valid")
	}
}
