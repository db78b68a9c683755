package scenario

import (
	"path/filepath"
	"reflect"
	"testing"
)

// Every shipped scenario and valid fixture, written by Marshal and parsed again,
// gives the same lab and the same checks.
func TestMarshalRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("../../scenarios/*.yaml")
	valid, _ := filepath.Glob("testdata/valid/*.yaml")
	files = append(files, valid...)
	if len(files) < 16 {
		t.Fatalf("only %d scenarios found", len(files))
	}
	for _, f := range files {
		s, err := Load(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		b, err := Marshal(s)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		again, err := Parse(filepath.Join(t.TempDir(), "again.yaml"), b)
		if err != nil {
			t.Fatalf("%s: written back:\n%s\ndoes not parse: %v", f, b, err)
		}
		if !reflect.DeepEqual(again.Spec, s.Spec) {
			t.Errorf("%s: spec differs after a round trip:\n got %+v\nwant %+v", f, again.Spec, s.Spec)
		}
		if !reflect.DeepEqual(again.Checks, s.Checks) {
			t.Errorf("%s: checks differ after a round trip:\n got %+v\nwant %+v", f, again.Checks, s.Checks)
		}
		if !reflect.DeepEqual(again.Steps, s.Steps) {
			t.Errorf("%s: steps differ after a round trip:\n got %+v\nwant %+v", f, again.Steps, s.Steps)
		}
		if again.Name != s.Name || again.Description != s.Description || again.Topology.File != filepath.Clean(abs(t, s.Topology.File)) {
			t.Errorf("%s: name, description or topology differ: %s %q %s", f, again.Name, again.Description, again.Topology.File)
		}
	}
}

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
