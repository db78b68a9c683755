package jsonview

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"path"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Schemas are the JSON schemas of lvslab's JSON output, by file name:
// verify.schema.json, status.schema.json, ipvs.schema.json.
//
//go:embed schema/*.schema.json
var Schemas embed.FS

// BaseID is where the schemas' $ids live; nothing is fetched from there.
const BaseID = "https://lvslab.github.io/schema/v1/"

// Validator checks documents against the schemas.
type Validator struct {
	schemas map[string]*jsonschema.Schema
}

// NewValidator compiles every schema (they refer to one another by $id,
// resolved here, never over the network).
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	files, err := Schemas.ReadDir("schema")
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		b, err := Schemas.ReadFile(path.Join("schema", f.Name()))
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
		if err := c.AddResource(BaseID+f.Name(), doc); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for _, f := range files {
		s, err := c.Compile(BaseID + f.Name())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f.Name(), err)
		}
		v.schemas[f.Name()] = s
	}
	return v, nil
}

// Validate checks a JSON document against the named schema
// ("verify.schema.json").
func (v *Validator) Validate(schema string, data []byte) error {
	s, ok := v.schemas[schema]
	if !ok {
		return fmt.Errorf("no schema %s", schema)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("not valid under %s: %w", schema, err)
	}
	return nil
}

// Marshal writes v as indented JSON, as lvslab prints it: text as it is
// (a captured frame's "a > b" is not written "a \u003e b").
func Marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
