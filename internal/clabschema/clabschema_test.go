package clabschema

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/topo"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// load gets containerlab's schema through the module cache. It fails the test,
// never skips it: under `make unit` the schema must be obtainable (the module
// proxy is reachable wherever the unit tests run).
func load(t *testing.T) *Schema {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := Load(ctx)
	if err != nil {
		t.Fatalf("cannot obtain containerlab's schema: %v", err)
	}
	return s
}

// validFiles are the topology files meant to be valid: the shipped ones and the
// packages' valid fixtures.
func validFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{
		"../../topologies/*.clab.yml",
		"../../pkg/topo/testdata/valid/*.clab.yml",
		"../../pkg/scenario/testdata/*.clab.yml",
	} {
		m, err := filepath.Glob(pattern)
		if err != nil || len(m) == 0 {
			t.Fatalf("no files match %s (%v)", pattern, err)
		}
		files = append(files, m...)
	}
	return files
}

func TestSchemaComesFromThePinnedModule(t *testing.T) {
	s := load(t)
	want := filepath.FromSlash(Module+"@"+Version) + string(filepath.Separator) + filepath.FromSlash(SchemaFile)
	if !strings.HasSuffix(s.Path(), want) {
		t.Errorf("schema path %s does not end in %s", s.Path(), want)
	}
}

// Every file lvslab ships or keeps as a valid fixture is a valid containerlab
// file, by containerlab's schema and by lvslab's own parser.
func TestValidTopologiesMatchSchema(t *testing.T) {
	s := load(t)
	for _, f := range validFiles(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			if err := s.ValidateFile(f); err != nil {
				t.Error(err)
			}
			if _, err := topo.Load(f); err != nil {
				t.Error(err)
			}
		})
	}
}

// Each invalid fixture of pkg/topo says on its first line the error lvslab's
// parser must give (naming file, field and value), and on its second whether
// containerlab's schema rejects it too ("# schema: rejects: why") or accepts it
// ("# schema: accepts: why"): lvslab reads a strict subset, so some files are
// containerlab's but not lvslab's, and the schema does not see everything
// containerlab's Go code checks at deploy.
func TestInvalidTopologiesAgainstSchema(t *testing.T) {
	s := load(t)
	files, _ := filepath.Glob("../../pkg/topo/testdata/invalid/*.clab.yml")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	rejected := 0
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(string(b), "\n", 3)
			if len(lines) < 3 {
				t.Fatalf("%s: too short for its two header lines", f)
			}
			want, ok := strings.CutPrefix(lines[0], "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be '# want: <error>'", f)
			}
			verdict, ok := strings.CutPrefix(lines[1], "# schema: ")
			if !ok || !(strings.HasPrefix(verdict, "rejects: ") || strings.HasPrefix(verdict, "accepts: ")) {
				t.Fatalf("%s: second line must be '# schema: rejects: <why>' or '# schema: accepts: <why>'", f)
			}
			if _, err := topo.Load(f); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("lvslab's parser: error %v, want %q", err, want)
			}
			err = s.ValidateYAML(f, b)
			switch {
			case strings.HasPrefix(verdict, "rejects: "):
				rejected++
				var ve *jsonschema.ValidationError
				if !errors.As(err, &ve) {
					t.Errorf("containerlab's schema accepts it (error %v), but the fixture says it %s", err, verdict)
				}
			case err != nil:
				t.Errorf("containerlab's schema rejects it, but the fixture says it %s: %v", verdict, err)
			}
		})
	}
	if rejected == 0 {
		t.Error("no fixture is rejected by containerlab's schema")
	}
}

// The checks the schema itself makes, on documents written here.
func TestValidateYAML(t *testing.T) {
	s := load(t)
	const links = "  links: [{endpoints: [\"a:eth1\", \"b:eth1\"]}]\n"
	for _, c := range []struct {
		name, doc string
		wantErr   string // "" for valid; else a part of the error
	}{
		{"minimal", "name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links, ""},
		{"containerlab's keys", "name: x\ntopology:\n  nodes:\n    a: {kind: linux, image: lvslab/node:v1, image-pull-policy: never, cmd: sleep infinity, network-mode: none, labels: {lvslab: x, port: 80}}\n    b: {kind: bridge}\n" + links, ""},
		{"unknown top-level key", "name: x\nlab: y\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links, "additional properties 'lab' not allowed"},
		{"unknown kind", "name: x\ntopology:\n  nodes: {a: {kind: router}, b: {kind: linux}}\n" + links, "/topology/nodes/a/kind"},
		{"bad pull policy", "name: x\ntopology:\n  nodes: {a: {kind: linux, image-pull-policy: sometimes}, b: {kind: linux}}\n" + links, "/topology/nodes/a/image-pull-policy"},
		{"name not a string", "name: 7\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links, "at '/name'"},
		{"no topology", "name: x\n", "missing property 'topology'"},
		{"not YAML", "name: [x\n", "x.clab.yml: yaml:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.ValidateYAML("x.clab.yml", []byte(c.doc))
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case c.wantErr != "" && err == nil:
				t.Errorf("accepted, want an error with %q", c.wantErr)
			case c.wantErr != "" && !strings.Contains(err.Error(), c.wantErr):
				t.Errorf("error %v, want one with %q", err, c.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "x.clab.yml: "):
				t.Errorf("error does not start with the file name: %v", err)
			}
		})
	}
}

func TestJSONValue(t *testing.T) {
	got, err := jsonValue(map[any]any{1: []any{map[string]any{"a": true}, nil, 2.5}})
	if err != nil {
		t.Fatal(err)
	}
	m, ok := got.(map[string]any)
	if !ok || len(m) != 1 {
		t.Fatalf("got %#v, want a map with key \"1\"", got)
	}
	l, ok := m["1"].([]any)
	if !ok || len(l) != 3 || l[1] != nil || l[2] != 2.5 {
		t.Fatalf("got %#v", got)
	}
	for _, c := range []struct {
		in   time.Time
		want string
	}{
		{time.Date(2001, 12, 14, 0, 0, 0, 0, time.UTC), "2001-12-14"},
		{time.Date(2001, 12, 14, 21, 59, 43, 0, time.UTC), "2001-12-14T21:59:43Z"},
	} {
		if got, err := jsonValue(c.in); err != nil || got != c.want {
			t.Errorf("jsonValue(%v) = %v, %v; want %q", c.in, got, err, c.want)
		}
	}
	if _, err := jsonValue(struct{}{}); err == nil {
		t.Error("a Go struct has no JSON form here")
	}
}

// A file lvslab's parser accepts is a valid containerlab file: checked here on
// YAML whose types, aliases and merge keys a parser into Go strings could let
// through (each either accepted by both, or rejected by lvslab).
func TestAcceptedIsValid(t *testing.T) {
	s := load(t)
	const links = "  links: [{endpoints: [\"a:eth1\", \"b:eth1\"]}]\n"
	accepted := 0
	for _, doc := range []string{
		"name: 2001-12-14\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, image: 2001-12-14}, b: {kind: linux}}\n" + links,
		"name: '123'\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links,
		"name: 123\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: 0x10, b: 1e3, c: 0, d: yes, e: 2001-12-14}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: -1}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: .nan}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: .inf}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: false}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, labels: {a: ~}}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, image: ~}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes: {a: {kind: linux, image: 7}, b: {kind: linux}}\n" + links,
		"name: x\ntopology:\n  nodes:\n    a: &n {kind: linux, image: 7}\n    b: {<<: *n}\n" + links,
		"name: x\ntopology:\n  nodes:\n    a: &n {kind: linux, labels: {x: true}}\n    b: {<<: *n}\n" + links,
		"name: x\ntopology:\n  nodes:\n    a: &n {kind: linux, labels: {x: \"1\"}}\n    b: *n\n" + links,
		"name: x\ntopology:\n  nodes: {1: {kind: linux}, b: {kind: linux}}\n  links: [{endpoints: [\"1:eth1\", \"b:eth1\"]}]\n",
		"name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: linux}}\n  links: [{endpoints: [\"a:eth1\", \"b:1\"]}]\n",
		"name: x\ntopology:\n  nodes: {a: {kind: linux}, b: {kind: bridge}}\n  links: [{endpoints: [\"a:eth1\", \"b:a\"]}]\n",
	} {
		if _, err := topo.Parse("x.clab.yml", []byte(doc)); err != nil {
			continue
		}
		accepted++
		if err := s.ValidateYAML("x.clab.yml", []byte(doc)); err != nil {
			t.Errorf("lvslab accepts a file containerlab's schema rejects:\n%s%v", doc, err)
		}
	}
	if accepted < 8 {
		t.Errorf("lvslab accepts %d of these files, want 8: the table no longer tests what it says", accepted)
	}
}
