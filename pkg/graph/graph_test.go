package graph

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/topo"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func build(t *testing.T, file string) *Graph {
	t.Helper()
	s, err := scenario.Load(filepath.Join("../../scenarios", file))
	if err != nil {
		t.Fatal(err)
	}
	return Build(s.Topology, &s.Spec)
}

// Columns by links from the client; roles from the scenario.
func TestLayersAndRoles(t *testing.T) {
	for _, c := range []struct {
		file   string
		layers map[string]int
		roles  map[string]Role
	}{
		{"nat-rr.yaml", map[string]int{"client": 0, "director": 1, "lan": 2, "web1": 3, "web2": 3},
			map[string]Role{"client": RoleClient, "director": RoleDirector, "lan": RoleBridge, "web1": RoleRealServer}},
		{"dr-rr.yaml", map[string]int{"client": 0, "lan": 1, "director": 2, "web1": 2, "web2": 2},
			map[string]Role{"director": RoleDirector, "web2": RoleRealServer}},
		{"ha-nat.yaml", map[string]int{"client": 0, "wan": 1, "director1": 2, "director2": 2, "lan": 3, "web1": 4, "web2": 4},
			map[string]Role{"director1": RoleDirector, "director2": RoleDirector, "web1": RoleRealServer}},
	} {
		g := build(t, c.file)
		for name, want := range c.layers {
			n, ok := g.Node(name)
			if !ok || n.Layer != want {
				t.Errorf("%s: %s in column %d, want %d", c.file, name, n.Layer, want)
			}
		}
		for name, want := range c.roles {
			if n, _ := g.Node(name); n.Role != want {
				t.Errorf("%s: %s is %q, want %q", c.file, name, n.Role, want)
			}
		}
	}
}

// What the boxes say: addresses by interface, the VIP, the VRRP addresses
// and each service with its scheduler, method and real servers.
func TestLines(t *testing.T) {
	g := build(t, "ha-nat.yaml")
	d, _ := g.Node("director1")
	want := []string{
		"eth1 203.0.113.2/24",
		"eth2 198.51.100.2/24",
		"eth1 203.0.113.1/32 VRRP VI_OUT MASTER prio 150",
		"eth2 198.51.100.1/32 VRRP VI_IN MASTER prio 150",
		"tcp 203.0.113.1:80 rr NAT → web1, web2",
	}
	if strings.Join(d.Lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("director1 says\n%s\nwant\n%s", strings.Join(d.Lines, "\n"), strings.Join(want, "\n"))
	}
	w, _ := build(t, "dr-rr.yaml").Node("web1")
	if !strings.Contains(strings.Join(w.Lines, "\n"), "lo 203.0.113.1/32 (VIP)") {
		t.Fatalf("web1 says %q: no VIP on lo", w.Lines)
	}
}

// The three formats of nat-rr, as the golden files keep them (go test
// -update rewrites them).
func TestGolden(t *testing.T) {
	g := build(t, "nat-rr.yaml")
	for _, f := range Formats {
		var b bytes.Buffer
		if err := g.Write(&b, f); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join("testdata", "nat-rr."+string(f))
		if *update {
			if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		want, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b.Bytes(), want) {
			t.Errorf("%s differs from %s:\n%s", f, file, b.String())
		}
	}
}

// Every shipped scenario's SVG is well-formed XML, names every node and
// address, and loads nothing from outside.
func TestSVGOfEveryScenario(t *testing.T) {
	files, _ := filepath.Glob("../../scenarios/*.yaml")
	for _, f := range files {
		g := build(t, filepath.Base(f))
		var b bytes.Buffer
		if err := g.WriteSVG(&b); err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(bytes.NewReader(b.Bytes()))
		var text strings.Builder
		for {
			tok, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: not well-formed: %v", f, err)
			}
			if cd, ok := tok.(xml.CharData); ok {
				text.Write(cd)
				text.WriteByte('\n')
			}
		}
		for _, n := range g.Nodes {
			if !strings.Contains(text.String(), n.Name) {
				t.Errorf("%s: no %s in the picture", f, n.Name)
			}
			for _, l := range n.Lines {
				if !strings.Contains(text.String(), l) {
					t.Errorf("%s: %s's %q not in the picture", f, n.Name, l)
				}
			}
		}
		for _, outside := range []string{"href", "url(", "@import", "<image"} {
			if bytes.Contains(b.Bytes(), []byte(outside)) {
				t.Errorf("%s: the picture refers outside (%s)", f, outside)
			}
		}
	}
}

// A topology alone: its nodes and links, no roles but bridges.
func TestTopologyAlone(t *testing.T) {
	tp, err := topo.Load("../../topologies/lvs-dr.clab.yml")
	if err != nil {
		t.Fatal(err)
	}
	g := Build(tp, nil)
	if len(g.Nodes) != 5 || len(g.Edges) != 4 {
		t.Fatalf("%d nodes, %d edges", len(g.Nodes), len(g.Edges))
	}
	var b bytes.Buffer
	if err := g.WriteDot(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"lan" [label="lan", fillcolor="#f1f5f9", shape=ellipse];`) {
		t.Fatalf("dot:\n%s", b.String())
	}
}
