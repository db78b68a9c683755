// Package clabschema checks topology files against containerlab's own JSON schema,
// schemas/clab.schema.json of a pinned containerlab release, read from the Go module
// cache. It is for tests: the schema is fetched with `go mod download`, so the go
// command and the module proxy (or a module cache that already holds the release)
// must be at hand, and containerlab never enters lvslab's build.
package clabschema

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

// The containerlab release whose schema lvslab's topology files must satisfy. The
// module proxy refuses to list containerlab's versions, so the version is named.
const (
	Module     = "github.com/srl-labs/containerlab"
	Version    = "v0.79.0"
	SchemaFile = "schemas/clab.schema.json" // inside the module
)

// download is what `go mod download -json` prints for one module.
type download struct {
	Path    string
	Version string
	Dir     string
	Error   string
}

// Path downloads containerlab Version into the module cache if it is not there
// yet (that module's zip only, not its dependencies) and returns the path of its
// schema file. It runs the go command found on PATH (`go test` puts its own first)
// in an empty directory outside any module, so no go.mod or go.sum is touched.
func Path(ctx context.Context) (string, error) {
	dir, err := os.MkdirTemp("", "clabschema-")
	if err != nil {
		return "", fmt.Errorf("containerlab schema: %w", err)
	}
	defer os.RemoveAll(dir)
	mod := Module + "@" + Version
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOWORK=off")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var d download
	if err := json.Unmarshal(stdout.Bytes(), &d); err != nil {
		return "", fmt.Errorf("containerlab schema: go mod download %s: %w (%s; stderr: %s)",
			mod, errors.Join(runErr, err), bytes.TrimSpace(stdout.Bytes()), bytes.TrimSpace(stderr.Bytes()))
	}
	if d.Error != "" {
		return "", fmt.Errorf("containerlab schema: go mod download %s: %s", mod, d.Error)
	}
	if runErr != nil {
		return "", fmt.Errorf("containerlab schema: go mod download %s: %w (stderr: %s)", mod, runErr, bytes.TrimSpace(stderr.Bytes()))
	}
	if d.Path != Module || d.Version != Version || d.Dir == "" {
		return "", fmt.Errorf("containerlab schema: go mod download %s answered %s@%s in %q", mod, d.Path, d.Version, d.Dir)
	}
	p := filepath.Join(d.Dir, filepath.FromSlash(SchemaFile))
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("containerlab schema: %s@%s has no %s: %w", Module, Version, SchemaFile, err)
	}
	return p, nil
}

// Schema is containerlab's topology schema, compiled.
type Schema struct {
	path string
	s    *jsonschema.Schema
}

// Load finds the schema (Path) and compiles it.
func Load(ctx context.Context) (*Schema, error) {
	p, err := Path(ctx)
	if err != nil {
		return nil, err
	}
	return Compile(p)
}

// Compile compiles the schema file at path. The file says which draft it follows
// ($schema: draft-07 for containerlab v0.79.0) and it is read under that draft, as
// editors and other validators read it.
func Compile(path string) (*Schema, error) {
	s, err := jsonschema.NewCompiler().Compile(path)
	if err != nil {
		return nil, fmt.Errorf("containerlab schema %s: %w", path, err)
	}
	return &Schema{path: path, s: s}, nil
}

// Path is the schema file Compile read.
func (s *Schema) Path() string { return s.path }

// ValidateYAML checks a topology file's contents; file names it in the error. The
// error wraps the validator's *jsonschema.ValidationError when the file parses as
// YAML but does not satisfy the schema.
func (s *Schema) ValidateYAML(file string, data []byte) error {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	v, err := jsonValue(doc)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := s.s.Validate(v); err != nil {
		return fmt.Errorf("%s: not valid under containerlab %s's %s: %w", file, Version, SchemaFile, err)
	}
	return nil
}

// ValidateFile reads file and checks it (ValidateYAML).
func (s *Schema) ValidateFile(file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("containerlab schema: %w", err)
	}
	return s.ValidateYAML(file, b)
}

// jsonValue turns a decoded YAML document into the values a JSON document has,
// which is what the validator takes: mappings become map[string]any. yaml.v3
// gives map[string]any when every key is a string; a mapping with other keys
// (e.g. `1: x`) gets them as text, as a YAML-aware editor's validator sees them,
// and a timestamp becomes text too.
func jsonValue(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			j, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[k] = j
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			j, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[fmt.Sprint(k)] = j
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			j, err := jsonValue(e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	case nil, string, bool, int, int64, uint64, float64:
		return v, nil
	case time.Time:
		// yaml.v3 gives an unquoted timestamp as time.Time; JSON has only text
		// for it. Its original spelling is gone: a date alone comes back as one.
		if v.Equal(v.Truncate(24 * time.Hour)) {
			return v.Format(time.DateOnly), nil
		}
		return v.Format(time.RFC3339Nano), nil
	default:
		return nil, fmt.Errorf("YAML value %v (%T) has no JSON form", v, v)
	}
}
