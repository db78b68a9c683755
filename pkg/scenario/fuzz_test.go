package scenario

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/lab"
)

// fuzzFile is the file name the fuzz target gives Parse: a file in the shipped
// scenarios directory, so "topology: ../topologies/lvs-nat.clab.yml" resolves.
const fuzzFile = "../../scenarios/fuzz.yaml"

// maxFuzzInput bounds the inputs the fuzz target parses: scenario files are a few
// kilobytes, and larger inputs only slow the search down.
const maxFuzzInput = 64 << 10

// FuzzScenario checks properties of Parse on any bytes:
//   - it returns: no panic, no hang (Go's fuzzing worker fails an input still running
//     after 10 s; topo.Load reads a topology path only if it is a small regular file);
//   - a rejected input's error starts with the file name given;
//   - an accepted input parses the same way twice;
//   - every director's services, printed as ipvsadm-save prints them and run again
//     as rules, give the same services (the YAML form says nothing ipvsadm cannot);
//   - every real server has a weight in 0..65535 and, when it has an upper
//     threshold, a lower one not above it;
//   - Marshal writes it back as a file that parses to the same spec and checks.
func FuzzScenario(f *testing.F) {
	scenarios, _ := filepath.Glob("../../scenarios/*.yaml")
	fixtures, _ := filepath.Glob("testdata/*/*.yaml")
	if len(scenarios) == 0 || len(fixtures) == 0 {
		f.Fatal("no seed files")
	}
	for _, s := range scenarios {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// The fixtures name their topologies relative to testdata/invalid; seen from
	// scenarios/ the same files are elsewhere.
	paths := strings.NewReplacer(
		"topology: ../../../../topologies/", "topology: ../topologies/",
		"topology: ../routed.clab.yml", "topology: ../pkg/scenario/testdata/routed.clab.yml",
	)
	for _, s := range fixtures {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(paths.Replace(string(b))))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > maxFuzzInput {
			t.Skip("input larger than a scenario file needs to be")
		}
		s, err := Parse(fuzzFile, data)
		if err != nil {
			// Further lines may name the topology file, where those problems are.
			if !strings.HasPrefix(err.Error(), fuzzFile+": ") {
				t.Fatalf("error does not start with the file name: %q", err)
			}
			return
		}
		again, err := Parse(fuzzFile, data)
		if err != nil {
			t.Fatalf("accepted once, rejected the second time: %v", err)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("two parses of one input differ:\n%+v\n%+v", s, again)
		}
		written, err := Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse(fuzzFile, written)
		if err != nil {
			t.Fatalf("written back as\n%s\nit does not parse: %v", written, err)
		}
		if !reflect.DeepEqual(withoutEmptySpec(back.Spec), withoutEmptySpec(s.Spec)) || !reflect.DeepEqual(back.Checks, s.Checks) {
			t.Fatalf("written back as\n%s\nit parses to\n%+v\n%+v\nnot\n%+v\n%+v", written, back.Spec, back.Checks, s.Spec, s.Checks)
		}
		for _, n := range s.Spec.Nodes {
			for _, svc := range n.Services {
				for _, srv := range svc.Servers {
					if srv.Weight < 0 || srv.Weight > 65535 {
						t.Fatalf("node %s, %s: real server %s has weight %d", n.Name, svc.Key(), srv.Addr, srv.Weight)
					}
					if srv.Upper != 0 && srv.Lower > srv.Upper {
						t.Fatalf("node %s, %s: real server %s has lower threshold %d above upper %d", n.Name, svc.Key(), srv.Addr, srv.Lower, srv.Upper)
					}
				}
			}
			if len(n.Services) == 0 {
				continue
			}
			var save bytes.Buffer
			if err := ipvsadm.WriteRules(&save, n.Services); err != nil {
				t.Fatal(err)
			}
			back, err := ipvsadm.Build(strings.Split(strings.TrimSpace(save.String()), "\n"))
			if err != nil {
				t.Fatalf("node %s: services printed as\n%s\ndo not run as rules: %v", n.Name, save.String(), err)
			}
			if !reflect.DeepEqual(withoutEmpty(back), withoutEmpty(n.Services)) {
				t.Fatalf("node %s: services printed as\n%s\nrun back to\n%+v\nnot\n%+v", n.Name, save.String(), back, n.Services)
			}
		}
	})
}

// withoutEmpty returns a copy of services in which empty server and flag lists are
// nil, so that a list emptied by a -d rule equals one never filled.
func withoutEmpty(services []lab.Service) []lab.Service {
	var out []lab.Service
	for _, s := range services {
		if len(s.Servers) == 0 {
			s.Servers = nil
		}
		if len(s.SchedFlags) == 0 {
			s.SchedFlags = nil
		}
		out = append(out, s)
	}
	return out
}

// withoutEmptySpec is spec with withoutEmpty services on every node.
func withoutEmptySpec(spec lab.Spec) lab.Spec {
	out := lab.Spec{Nodes: slices.Clone(spec.Nodes)}
	for i := range out.Nodes {
		out.Nodes[i].Services = withoutEmpty(out.Nodes[i].Services)
	}
	return out
}
