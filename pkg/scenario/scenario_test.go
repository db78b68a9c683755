package scenario

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Each invalid fixture names, on its first line, the error it must produce.
func TestInvalidScenarios(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.yaml")
	if len(files) < 10 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line must be '# want: <error>'")
			}
			_, err = Load(f)
			if err == nil {
				t.Fatalf("Load succeeded, want error %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error\n  got  %q\n  want %q", err, want)
			}
		})
	}
}

func TestShippedScenariosLoad(t *testing.T) {
	files, _ := filepath.Glob("../../scenarios/*.yaml")
	if len(files) == 0 {
		t.Fatal("no scenarios shipped")
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestNATRR(t *testing.T) {
	s, err := Load("../../scenarios/nat-rr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "nat-rr" || s.Topology.Name != "nat-rr" {
		t.Errorf("lab name %q / %q, want nat-rr", s.Name, s.Topology.Name)
	}
	if s.Director() != "director" {
		t.Fatalf("director %q", s.Director())
	}
	d, _ := s.Spec.Node("director")
	want := lab.Service{
		Protocol: "tcp", Addr: netip.MustParseAddrPort("203.0.113.1:80"), Scheduler: "rr",
		Servers: []lab.Server{
			{Addr: netip.MustParseAddrPort("198.51.100.11:80"), Method: "nat", Weight: 1},
			{Addr: netip.MustParseAddrPort("198.51.100.12:80"), Method: "nat", Weight: 1},
		},
	}
	if len(d.Services) != 1 {
		t.Fatalf("services %+v", d.Services)
	}
	got := d.Services[0]
	if got.Key() != want.Key() || got.Scheduler != want.Scheduler || len(got.Servers) != 2 ||
		got.Servers[0] != want.Servers[0] || got.Servers[1] != want.Servers[1] {
		t.Errorf("service\n got %+v\nwant %+v", got, want)
	}
	if len(d.Sysctls) != 1 || d.Sysctls[0] != (lab.Sysctl{Key: "net.ipv4.ip_forward", Value: "1"}) {
		t.Errorf("sysctls %+v", d.Sysctls)
	}
	w, _ := s.Spec.Node("web1")
	if w.Web == nil || len(w.Web.HTTP) != 1 || w.Web.HTTP[0] != 80 {
		t.Errorf("web1 web %+v", w.Web)
	}
	if len(w.Routes) != 1 || w.Routes[0].String() != "0.0.0.0/0 via 198.51.100.1" {
		t.Errorf("web1 routes %v", w.Routes)
	}
}

func TestDefaults(t *testing.T) {
	s, err := Parse("../../scenarios/x.yaml", []byte(`version: 1
topology: ../topologies/lvs-nat.clab.yml
nodes:
  director:
    ipvs:
      services:
        - protocol: tcp
          address: 203.0.113.1:80
          servers: [{address: 198.51.100.11:80}]
  web1:
    addresses: {eth1: [198.51.100.11/24]}
`))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Spec.Node("director")
	svc := d.Services[0]
	if svc.Scheduler != "wlc" {
		t.Errorf("default scheduler %q, want wlc (ipvsadm's default)", svc.Scheduler)
	}
	if svc.Servers[0].Method != "dr" || svc.Servers[0].Weight != 1 {
		t.Errorf("default server %+v, want dr (-g) with weight 1", svc.Servers[0])
	}
	if s.Name != "lvs-nat" {
		t.Errorf("lab name defaults to the topology's, got %q", s.Name)
	}
}

// An IPv4-mapped address is the IPv4 address, as ipvsadm reads it: the service is
// an IPv4 service, and it prints as ipvsadm-save prints it.
func TestMappedAddressesAreIPv4(t *testing.T) {
	s, err := Parse("../../scenarios/x.yaml", []byte(`version: 1
topology: ../topologies/lvs-nat.clab.yml
nodes:
  director:
    addresses: {eth2: [198.51.100.1/24]}
    ipvs:
      services:
        - protocol: tcp
          address: "[::ffff:203.0.113.1]:80"
          servers: [{address: "::ffff:198.51.100.11", method: nat}]
  web1:
    addresses: {eth1: [198.51.100.11/24]}
`))
	if err != nil {
		t.Fatal(err)
	}
	d, _ := s.Spec.Node("director")
	svc := d.Services[0]
	if svc.Addr != netip.MustParseAddrPort("203.0.113.1:80") || svc.Is6() || svc.Netmask != 32 {
		t.Errorf("service %s (netmask /%d), want IPv4 203.0.113.1:80 /32", svc.Addr, svc.Netmask)
	}
	if got := svc.Servers[0].Addr; got != netip.MustParseAddrPort("198.51.100.11:80") {
		t.Errorf("real server %s, want 198.51.100.11:80", got)
	}
}

// Marks go to IPv4 or IPv6 destinations (an IPv4-mapped one is IPv4); a zone
// is not part of a packet's destination.
func TestMarkDestinations(t *testing.T) {
	load := func(dst string) (*Scenario, error) {
		return Parse("../../scenarios/x.yaml", []byte(`version: 1
topology: ../topologies/lvs-nat.clab.yml
nodes:
  director:
    firewall:
      marks: [{protocol: tcp, destination: "`+dst+`", ports: [443, 80], mark: 10}]
`))
	}
	for dst, want := range map[string]string{"203.0.113.1": "203.0.113.1", "2001:db8::1": "2001:db8::1", "::ffff:203.0.113.1": "203.0.113.1"} {
		s, err := load(dst)
		if err != nil {
			t.Fatalf("%s: %v", dst, err)
		}
		d, _ := s.Spec.Node("director")
		if got := d.Marks[0].Destination; got != netip.MustParseAddr(want) {
			t.Errorf("%s: destination %s, want %s", dst, got, want)
		}
	}
	for _, dst := range []string{"fe80::1%eth1", "203.0.113.0/24", "x"} {
		if _, err := load(dst); err == nil || !strings.Contains(err.Error(), "is not an IPv4 or IPv6 address") {
			t.Errorf("%s: %v", dst, err)
		}
	}
}

// A check with connections in flight: parsed, judged as counts, written back.
func TestConcurrencyCheck(t *testing.T) {
	s, err := Load("../../scenarios/nat-wrr.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var c lab.Check
	for _, x := range s.Checks {
		if x.Concurrency > 1 {
			c = x
		}
	}
	if c.Concurrency != 64 || c.Sources != 24 || c.Requests != 250 || !c.Expect.Model || c.Expect.Counts["web1"] != 3000 {
		t.Fatalf("concurrent check of nat-wrr: %+v", c)
	}
	if !strings.Contains(c.Describe(), "64 at a time") {
		t.Errorf("Describe() = %q, want the concurrency in it", c.Describe())
	}
	b, err := Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "concurrency: 64") {
		t.Errorf("written back without its concurrency:\n%s", b)
	}
}

// A director's keepalived.conf, given as a file, is the same lab as the
// keepalived section and ipvs rules it was exported from.
func TestKeepalivedFile(t *testing.T) {
	inline, err := Load("../../scenarios/ha-healthcheck.yaml")
	if err != nil {
		t.Fatal(err)
	}
	file, err := Load("testdata/valid/keepalived-file.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(file.Spec, inline.Spec) {
		t.Fatalf("spec from the file\n%+v\nfrom the scenario\n%+v", file.Spec, inline.Spec)
	}
}
