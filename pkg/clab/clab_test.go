package clab

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/internal/clabschema"
	"github.com/lvslab/lvslab/pkg/topo"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden.clab.yml from what Marshal writes")

func load(t *testing.T, path string) *topo.Topology {
	t.Helper()
	top, err := topo.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return top
}

// The NAT lab of topologies/lvs-nat.clab.yml:
//
//	client ──eth1── director ──eth2── [lan] ──┬── web1
//	                                           └── web2
func TestMapNAT(t *testing.T) {
	l, err := Map(load(t, "../../topologies/lvs-nat.clab.yml"), "nat-rr", Options{Image: NodeImage("v1.2.3")})
	if err != nil {
		t.Fatal(err)
	}
	if l.Name != "nat-rr" || l.Source != "../../topologies/lvs-nat.clab.yml" {
		t.Errorf("lab %q from %q", l.Name, l.Source)
	}
	var names []string
	for _, n := range l.Nodes {
		names = append(names, n.Name)
		// The file names lvslab/node:latest for every linux node: its image, its command,
		// containerlab's default pull policy.
		want := Node{
			Name: n.Name, Container: "clab-nat-rr-" + n.Name, Kind: "linux",
			Image: "lvslab/node:latest", NetworkMode: "none", Labels: map[string]string{"lvslab": "nat-rr"},
		}
		if !reflect.DeepEqual(n, want) {
			t.Errorf("node\n got  %+v\n want %+v", n, want)
		}
	}
	if got := strings.Join(names, ","); got != "client,director,web1,web2" {
		t.Errorf("nodes %s", got)
	}
	wantBridges := []Bridge{{Node: "lan", Name: "nat-rr.lan", Alias: "lvslab lab=nat-rr bridge=lan"}}
	if !reflect.DeepEqual(l.Bridges, wantBridges) {
		t.Errorf("bridges %+v, want %+v", l.Bridges, wantBridges)
	}
	var links []string
	for _, k := range l.Links {
		links = append(links, k.A.String()+" "+k.B.String())
	}
	want := []string{
		"client:eth1 director:eth1",
		"director:eth2 nat-rr.lan:" + PortName("nat-rr", "lan", "director"),
		"web1:eth1 nat-rr.lan:" + PortName("nat-rr", "lan", "web1"),
		"web2:eth1 nat-rr.lan:" + PortName("nat-rr", "lan", "web2"),
	}
	if !reflect.DeepEqual(links, want) {
		t.Errorf("links\n got  %q\n want %q", links, want)
	}
	if l.Links[1].File.B != (topo.Endpoint{Node: "lan", Iface: "director"}) {
		t.Errorf("link 1 keeps the file's endpoint %v", l.Links[1].File.B)
	}
}

// A linux node whose file names no image gets lvslab's, never pulled, with a
// command; one that names its image keeps it and its command; the file's labels
// are kept beside lvslab's.
func TestMapImages(t *testing.T) {
	l, err := Map(load(t, "../topo/testdata/valid/two-nodes.clab.yml"), "two-lab", Options{Image: NodeImage("v1")})
	if err != nil {
		t.Fatal(err)
	}
	want := []Node{
		{Name: "a", Container: "clab-two-lab-a", Kind: "linux", Image: "lvslab/node:v1", PullPolicy: PullNever,
			Cmd: "sleep infinity", NetworkMode: NetworkNone, Labels: map[string]string{"lvslab": "two-lab"}},
		{Name: "b", Container: "clab-two-lab-b", Kind: "linux", Image: "alpine:3.20",
			NetworkMode: NetworkNone, Labels: map[string]string{"lvslab": "two-lab", "role": "client"}},
	}
	if !reflect.DeepEqual(l.Nodes, want) {
		t.Errorf("nodes\n got  %+v\n want %+v", l.Nodes, want)
	}
	if len(l.Bridges) != 0 {
		t.Errorf("bridges %v", l.Bridges)
	}
	l, err = Map(load(t, "../topo/testdata/valid/two-nodes.clab.yml"), "two-lab", Options{Cmd: "/sbin/init"})
	if err != nil {
		t.Fatal(err)
	}
	if n := l.Nodes[0]; n.Image != "lvslab/node:latest" || n.Cmd != "/sbin/init" {
		t.Errorf("default image and given command: %+v", n)
	}
}

func TestMapErrors(t *testing.T) {
	top := load(t, "../topo/testdata/valid/two-nodes.clab.yml")
	for _, c := range []struct {
		lab    string
		labels map[string]string
		want   string
	}{
		{"my lab", nil, `two-nodes.clab.yml: lab name "my lab" is not valid`},
		{strings.Repeat("x", topo.MaxLabName+1), nil, "is not valid"},
		{"ok", map[string]string{"lvslab": "other"}, `two-nodes.clab.yml: topology.nodes.b.labels.lvslab: "lvslab" is set by lvslab itself`},
		{"ok", map[string]string{"containerlab": "x"}, `two-nodes.clab.yml: topology.nodes.b.labels.containerlab: "containerlab" is set by containerlab itself`},
		{"ok", map[string]string{"clab-node-name": "x", "tool-type": "y"}, `topology.nodes.b.labels.clab-node-name: "clab-node-name" is set by containerlab itself`},
	} {
		t2 := *top
		t2.Nodes = maps.Clone(top.Nodes)
		if c.labels != nil {
			b := t2.Nodes["b"]
			b.Labels = c.labels
			t2.Nodes["b"] = b
		}
		_, err := Map(&t2, c.lab, Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Map(lab %q, labels %v): error %v, want %q", c.lab, c.labels, err, c.want)
		}
	}
}

// Names containerlab and the kernel see: the container's, the bridge's and its
// ports', within IFNAMSIZ, valid as node names in containerlab's schema, and
// unique.
func TestNames(t *testing.T) {
	if got := ContainerName("nat-rr", "web1"); got != "clab-nat-rr-web1" {
		t.Errorf("ContainerName = %s, want containerlab's clab-<lab>-<node>", got)
	}
	if got := BridgeName("nat-rr", "lan"); got != "nat-rr.lan" {
		t.Errorf("BridgeName(nat-rr, lan) = %s", got)
	}
	long := strings.Repeat("l", topo.MaxLabName)
	if got := BridgeName(long, "lan"); !regexp.MustCompile(`^lvb-[0-9a-f]{11}$`).MatchString(got) {
		t.Errorf("BridgeName(<40 chars>, lan) = %s, want lvb- and 11 hex digits", got)
	}
	for _, lab := range []string{"s1", long} {
		if got := PortName(lab, "lan", "web1"); !regexp.MustCompile(`^lvp-[0-9a-f]{11}$`).MatchString(got) {
			t.Errorf("PortName(%s, lan, web1) = %s, want lvp- and 11 hex digits", lab, got)
		}
	}
	// The pattern containerlab v0.79.0's schema gives node names (a bridge's
	// name is its node's name in the rendered file).
	nodeRE := regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9-._|]*$`)
	labs := []string{"a", "a-b", "nat-rr", "lvb", "x_y", long, long[:14], "lab-" + strings.Repeat("9", 20)}
	nodes := []string{"b", "b-c", "c", "lan", "lan2", "0123456789a", "br_0"}
	ifaces := []string{"web1", "web.1", "a", "eth1", "x.y.z"}
	seen := map[string]string{}
	check := func(name, what string) {
		t.Helper()
		if len(name) == 0 || len(name) > IFNameSize || strings.ContainsAny(name, "/: \t\n") || !nodeRE.MatchString(name) {
			t.Errorf("%s: %q is not a valid interface and node name", what, name)
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("%s and %s are both %q", prev, what, name)
		}
		seen[name] = what
	}
	for _, lab := range labs {
		for _, n := range nodes {
			check(BridgeName(lab, n), fmt.Sprintf("bridge %s/%s", lab, n))
			for _, i := range ifaces {
				check(PortName(lab, n, i), fmt.Sprintf("port %s/%s/%s", lab, n, i))
			}
		}
	}
}

func TestLabels(t *testing.T) {
	l, err := Map(load(t, "../topo/testdata/valid/two-nodes.clab.yml"), "two-lab", Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.Selector(), map[string]string{"containerlab": "two-lab", "lvslab": "two-lab"}; !maps.Equal(got, want) {
		t.Errorf("Selector = %v, want %v", got, want)
	}
	got := l.ContainerLabels(l.Nodes[1], "/run/lvslab/labs/two-lab/clab.yml")
	want := map[string]string{
		"containerlab":       "two-lab",
		"clab-node-name":     "b",
		"clab-node-longname": "clab-two-lab-b",
		"clab-node-kind":     "linux",
		"clab-topo-file":     "/run/lvslab/labs/two-lab/clab.yml",
		"lvslab":             "two-lab",
		"role":               "client",
	}
	if !maps.Equal(got, want) {
		t.Errorf("ContainerLabels\n got  %v\n want %v", got, want)
	}
	if _, ok := l.Nodes[1].Labels["containerlab"]; ok {
		t.Error("ContainerLabels changed the node's own labels")
	}
}

// topologyFiles are the topology files Marshal is checked on.
func topologyFiles(t *testing.T) []string {
	t.Helper()
	files, _ := filepath.Glob("../../topologies/*.clab.yml")
	files = append(files, "../topo/testdata/valid/two-nodes.clab.yml", "../scenario/testdata/routed.clab.yml")
	if len(files) < 4 {
		t.Fatalf("topology files: %v", files)
	}
	return files
}

// The file Marshal writes is a valid containerlab topology by containerlab
// v0.79.0's own schema (from the module cache; the test fails if it cannot be
// had), with a long lab name (hashed bridge names) and a short one.
func TestMarshalMatchesSchema(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	schema, err := clabschema.Load(ctx)
	if err != nil {
		t.Fatalf("cannot obtain containerlab's schema: %v", err)
	}
	for _, f := range topologyFiles(t) {
		for _, lab := range []string{"s1", strings.Repeat("student-", 4) + "42"} {
			t.Run(filepath.Base(f)+"/"+lab, func(t *testing.T) {
				l, err := Map(load(t, f), lab, Options{Image: NodeImage("v0.1.0-3-gabcdef0")})
				if err != nil {
					t.Fatal(err)
				}
				b, err := l.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if err := schema.ValidateYAML(lab+".clab.yml", b); err != nil {
					t.Errorf("%v\n%s", err, b)
				}
				checkRendered(t, l, b)
			})
		}
	}
}

// checkRendered reads b back and checks it says what l says.
func checkRendered(t *testing.T, l *Lab, b []byte) {
	t.Helper()
	var f file
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("rendered file does not read back: %v\n%s", err, b)
	}
	if f.Name != l.Name || f.Prefix != "clab" {
		t.Errorf("name %q prefix %q", f.Name, f.Prefix)
	}
	if len(f.Topology.Nodes) != len(l.Nodes)+len(l.Bridges) {
		t.Errorf("%d nodes rendered, want %d", len(f.Topology.Nodes), len(l.Nodes)+len(l.Bridges))
	}
	for _, n := range l.Nodes {
		r := f.Topology.Nodes[n.Name]
		if r.Kind != "linux" || r.Image != n.Image || r.ImagePullPolicy != n.PullPolicy || r.Cmd != n.Cmd ||
			r.NetworkMode != "none" || !maps.Equal(r.Labels, n.Labels) {
			t.Errorf("node %s rendered as %+v", n.Name, r)
		}
	}
	for _, br := range l.Bridges {
		if r, ok := f.Topology.Nodes[br.Name]; !ok || !reflect.DeepEqual(r, fileNode{Kind: "bridge"}) {
			t.Errorf("bridge %s rendered as %+v (present %v)", br.Name, r, ok)
		}
	}
	if len(f.Topology.Links) != len(l.Links) {
		t.Fatalf("%d links rendered, want %d", len(f.Topology.Links), len(l.Links))
	}
	for i, k := range l.Links {
		if got := f.Topology.Links[i].Endpoints; !reflect.DeepEqual(got, []string{k.A.String(), k.B.String()}) {
			t.Errorf("link %d rendered as %q", i, got)
		}
	}
}

// The NAT lab as a file, for people to read; `go test -run Golden -update`
// rewrites it.
func TestMarshalGolden(t *testing.T) {
	for _, c := range []struct{ topology, lab, golden string }{
		{"../../topologies/lvs-nat.clab.yml", "nat-rr", "testdata/nat-rr.golden.clab.yml"},
		{"../scenario/testdata/routed.clab.yml", "routed", "testdata/routed.golden.clab.yml"},
	} {
		l, err := Map(load(t, c.topology), c.lab, Options{Image: NodeImage("v1")})
		if err != nil {
			t.Fatal(err)
		}
		got, err := l.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if *update {
			if err := os.WriteFile(c.golden, got, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(c.golden)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("Marshal differs from %s:\n%s", c.golden, got)
		}
	}
}

func TestWriteFile(t *testing.T) {
	l, err := Map(load(t, "../../topologies/lvs-dr.clab.yml"), "dr-rr", Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "dr-rr.clab.yml")
	if err := l.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := l.Marshal()
	if string(got) != string(want) {
		t.Error("WriteFile wrote something else than Marshal")
	}
	if err := l.WriteFile(filepath.Join(t.TempDir(), "no", "such", "dir")); err == nil || !strings.HasPrefix(err.Error(), `lab "dr-rr": `) {
		t.Errorf("WriteFile into a missing directory: %v", err)
	}
}
