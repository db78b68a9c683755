package main

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
)

// exported runs lvslab export keepalived and parses each node's file back.
func exported(t *testing.T, args ...string) map[string]*keepalived.Config {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"export", "keepalived"}, args...)...)
	if code != 0 {
		t.Fatalf("export keepalived %v: status %d\n%s", args, code, errOut)
	}
	if !strings.Contains(out, "# no health checks") && !strings.Contains(out, "HTTP_GET {") && !strings.Contains(out, "TCP_CHECK {") {
		t.Errorf("neither health checks nor a comment saying there are none:\n%s", out)
	}
	configs := map[string]*keepalived.Config{}
	sections := strings.Split(out, "# node ")
	if len(sections) == 1 {
		sections = []string{"", "?\n" + out} // one node: no "# node" line
	}
	for _, sec := range sections[1:] {
		name, text, _ := strings.Cut(sec, "\n")
		c, err := keepalived.Parse(name+".conf", []byte(text))
		if err != nil {
			t.Fatalf("the output does not parse back: %v\n%s", err, text)
		}
		if name == "?" {
			name = c.RouterID
		}
		configs[name] = c
	}
	return configs
}

// services are the config's services; it must have nothing the scenario
// does not (health checks, delay_loop, sorry_server, inhibit_on_failure).
func services(t *testing.T, c *keepalived.Config) []lab.Service {
	t.Helper()
	var out []lab.Service
	for _, vs := range c.VirtualServers {
		if vs.DelayLoop != 0 || vs.SorryServer != nil {
			t.Errorf("%s: delay_loop or sorry_server written", vs.Service.Key())
		}
		for _, rs := range vs.RealServers {
			if rs.Check != nil || rs.InhibitOnFailure {
				t.Errorf("%s: a health check or inhibit_on_failure written for %s", vs.Service.Key(), rs.Server.Addr)
			}
		}
		out = append(out, vs.Service)
	}
	return out
}

// What lvslab export keepalived prints parses back to the scenario's
// services and VRRP instances, node by node.
func TestExportKeepalived(t *testing.T) {
	for _, c := range []struct {
		file  string
		nodes []string
	}{
		{"../../scenarios/ha-dr.yaml", []string{"director1", "director2"}},
		{"../../scenarios/nat-fwmark.yaml", []string{"director"}},
	} {
		t.Run(filepath.Base(c.file), func(t *testing.T) {
			s, err := scenario.Load(c.file)
			if err != nil {
				t.Fatal(err)
			}
			configs := exported(t, c.file)
			if len(configs) != len(c.nodes) {
				t.Fatalf("nodes %v, want %v", reflect.ValueOf(configs).MapKeys(), c.nodes)
			}
			for _, name := range c.nodes {
				n, _ := s.Spec.Node(name)
				got := configs[name]
				if got == nil {
					t.Fatalf("node %s not exported", name)
				}
				if !reflect.DeepEqual(services(t, got), n.Services) {
					t.Errorf("%s: services\n got %+v\nwant %+v", name, services(t, got), n.Services)
				}
				var vrrp []lab.VRRPInstance
				if n.Keepalived != nil {
					vrrp = n.Keepalived.VRRP
				}
				if !reflect.DeepEqual(got.VRRP, vrrp) {
					t.Errorf("%s: vrrp\n got %+v\nwant %+v", name, got.VRRP, vrrp)
				}
				if got.RouterID != name {
					t.Errorf("%s: router_id %q", name, got.RouterID)
				}
			}
			// --node picks one, printed without a "# node" line.
			one := exported(t, "--node", c.nodes[0], c.file)
			if n, _ := s.Spec.Node(c.nodes[0]); len(one) != 1 || !reflect.DeepEqual(services(t, one[c.nodes[0]]), n.Services) {
				t.Errorf("--node %s: %+v", c.nodes[0], one)
			}
		})
	}
}

// Every shipped scenario's directors export to a keepalived.conf that reads
// back to the same services.
func TestExportShippedScenarios(t *testing.T) {
	files, _ := filepath.Glob("../../scenarios/*.yaml")
	for _, f := range files {
		s, err := scenario.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		for name, c := range exported(t, f) {
			n, _ := s.Spec.Node(name)
			if n.Keepalived.ManagesIPVS() {
				// Health-checked: the virtual servers are the node's, checks and all.
				if want := keepalived.FromNode(n).VirtualServers; !reflect.DeepEqual(c.VirtualServers, want) {
					t.Errorf("%s, node %s: virtual servers\n got %+v\nwant %+v", f, name, c.VirtualServers, want)
				}
				continue
			}
			if !reflect.DeepEqual(services(t, c), n.Services) {
				t.Errorf("%s, node %s: services\n got %+v\nwant %+v", f, name, services(t, c), n.Services)
			}
		}
	}
}

func TestExportErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"export", "keepalived"}, exitUsage, "give a scenario file"},
		{[]string{"export", "keepalived", "--node", "nope", "../../scenarios/ha-dr.yaml"}, exitUsage, "--node nope: not a node of"},
		{[]string{"export", "keepalived", "--node", "web1", "../../scenarios/ha-dr.yaml"}, 1, "node web1: ../../scenarios/ha-dr.yaml gives it no IPVS services and no keepalived section"},
		{[]string{"export", "keepalived", "no-such.yaml"}, 1, "no-such.yaml"},
	} {
		code, _, errOut := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("lvslab %s: status %d, stderr %q; want %d and %q", strings.Join(c.args, " "), code, errOut, c.code, c.want)
		}
	}
}
