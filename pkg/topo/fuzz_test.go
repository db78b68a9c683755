package topo

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// fuzzFile is the file name the fuzz target gives Parse; every error must start with it.
const fuzzFile = "fuzz.clab.yml"

// maxFuzzInput bounds the inputs the fuzz target parses: topology files are a few
// hundred bytes, and larger inputs only slow the search down.
const maxFuzzInput = 64 << 10

// FuzzTopology checks properties of Parse on any bytes:
//   - it returns: no panic, no hang (Go's fuzzing worker fails an input still running after 10 s);
//   - a rejected input's error starts with the file name given, on every line;
//   - an accepted input parses the same way twice, and the topology written back as
//     a topology file parses to the same name, nodes and links.
func FuzzTopology(f *testing.F) {
	seeds, _ := filepath.Glob("../../topologies/*.clab.yml")
	fixtures, _ := filepath.Glob("testdata/*/*.clab.yml")
	seeds = append(seeds, fixtures...)
	// The scenario package's own topology fixture.
	seeds = append(seeds, "../scenario/testdata/routed.clab.yml")
	if len(seeds) == 0 {
		f.Fatal("no seed files")
	}
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			t.Skip("input larger than a topology file needs to be")
		}
		top, err := Parse(fuzzFile, data)
		if err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, fuzzFile+": ") {
					t.Fatalf("error does not name the file: %q", err)
				}
			}
			return
		}
		again, err := Parse(fuzzFile, data)
		if err != nil {
			t.Fatalf("accepted once, rejected the second time: %v", err)
		}
		if diff := topologyDiff(top, again); diff != "" {
			t.Fatalf("two parses of one input differ: %s", diff)
		}
		written := marshalTopology(t, top)
		back, err := Parse(fuzzFile, written)
		if err != nil {
			t.Fatalf("accepted topology written back does not parse: %v\n%s", err, written)
		}
		if diff := topologyDiff(top, back); diff != "" {
			t.Fatalf("topology written back parses differently: %s\n%s", diff, written)
		}
	})
}

// marshalTopology writes t as a topology file lvslab reads.
func marshalTopology(t *testing.T, top *Topology) []byte {
	t.Helper()
	var raw rawFile
	raw.Name = top.Name
	raw.Topology.Nodes = map[string]*rawNode{}
	for name, n := range top.Nodes {
		raw.Topology.Nodes[name] = &rawNode{Kind: n.Kind, Image: n.Image, Labels: n.Labels}
	}
	for _, l := range top.Links {
		raw.Topology.Links = append(raw.Topology.Links, rawLink{Endpoints: []string{l.A.String(), l.B.String()}})
	}
	b, err := yaml.Marshal(&raw)
	if err != nil {
		t.Fatalf("marshal %+v: %v", top, err)
	}
	return b
}

// topologyDiff says how a and b differ in name, nodes or links, or returns "".
// A node without labels and one with an empty label map are the same node.
func topologyDiff(a, b *Topology) string {
	if a.Name != b.Name {
		return "name " + a.Name + " != " + b.Name
	}
	sameNode := func(x, y Node) bool {
		return x.Name == y.Name && x.Kind == y.Kind && x.Image == y.Image && maps.Equal(x.Labels, y.Labels)
	}
	if !maps.EqualFunc(a.Nodes, b.Nodes, sameNode) {
		return fmt.Sprintf("nodes %v != %v", a.Nodes, b.Nodes)
	}
	if !reflect.DeepEqual(a.Links, b.Links) {
		return fmt.Sprintf("links %v != %v", a.Links, b.Links)
	}
	return ""
}
