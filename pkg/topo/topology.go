// Package topo owns a lab's network: it reads containerlab topology files and builds
// (and removes) the nodes and links they describe.
//
// The file format is a strict subset of containerlab's: a lab name, nodes of kind
// "linux" or "bridge", and point-to-point links written as endpoints "node:iface".
// Anything outside that subset is rejected with an error naming the file and field,
// so a file lvslab accepts is always a valid containerlab file.
package topo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Node kinds lvslab supports.
const (
	KindLinux  = "linux"
	KindBridge = "bridge"
)

// Topology is a parsed, validated topology file.
type Topology struct {
	File  string          // the file it came from, for error messages
	Name  string          // lab name
	Nodes map[string]Node // by node name
	Links []Link
}

// Node is one node of the topology.
type Node struct {
	Name   string
	Kind   string
	Image  string            // kept for containerlab; unused by the netns runtime
	Labels map[string]string // kept for containerlab
}

// Endpoint is one end of a link.
type Endpoint struct {
	Node  string
	Iface string
}

func (e Endpoint) String() string { return e.Node + ":" + e.Iface }

// Link joins two endpoints with a veth pair.
type Link struct {
	A, B Endpoint
}

// NodeNames returns the node names sorted, bridges first (links attach to them).
func (t *Topology) NodeNames() []string {
	names := make([]string, 0, len(t.Nodes))
	for n := range t.Nodes {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		bi, bj := t.Nodes[names[i]].Kind == KindBridge, t.Nodes[names[j]].Kind == KindBridge
		if bi != bj {
			return bi
		}
		return names[i] < names[j]
	})
	return names
}

// Modules are the kernel modules the netns runtime needs for t: veth for its
// links, bridge for its bridges.
func (t *Topology) Modules() []string {
	mods := []string{"veth"}
	for _, n := range t.Nodes {
		if n.Kind == KindBridge {
			return append(mods, "bridge")
		}
	}
	return mods
}

// Interfaces returns the interface names the topology gives node, in link order.
func (t *Topology) Interfaces(node string) []string {
	var out []string
	for _, l := range t.Links {
		for _, e := range []Endpoint{l.A, l.B} {
			if e.Node == node {
				out = append(out, e.Iface)
			}
		}
	}
	return out
}

// Peers returns the nodes linked to node, in link order, without repeats.
func (t *Topology) Peers(node string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range t.Links {
		for _, p := range [][2]Endpoint{{l.A, l.B}, {l.B, l.A}} {
			if p[0].Node == node && !seen[p[1].Node] {
				seen[p[1].Node] = true
				out = append(out, p[1].Node)
			}
		}
	}
	return out
}

// The raw file, with only the fields lvslab understands; yaml's KnownFields makes
// anything else an error.
type rawFile struct {
	Name     string `yaml:"name"`
	Topology struct {
		Nodes map[string]*rawNode `yaml:"nodes"`
		Links []rawLink           `yaml:"links"`
	} `yaml:"topology"`
}

type rawNode struct {
	Kind   string            `yaml:"kind"`
	Image  string            `yaml:"image"`
	Labels map[string]string `yaml:"labels"`
}

type rawLink struct {
	Endpoints []string `yaml:"endpoints"`
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	ifaceRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$`)
)

var (
	unknownFieldRE = regexp.MustCompile(`line (\d+): field (\S+) not found in type .*`)
	goTypeRE       = regexp.MustCompile(` into [\w.*\[\]]+`)
)

// YAMLError turns a YAML decoding error into one line per problem, naming the file
// and the line, in the file's terms rather than Go's.
func YAMLError(file string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n")
	var lines []string
	for _, l := range strings.Split(msg, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		l = unknownFieldRE.ReplaceAllString(l, "line $1: field $2 not found (not part of the format lvslab reads)")
		l = goTypeRE.ReplaceAllString(l, "")
		lines = append(lines, file+": "+l)
	}
	return errors.New(strings.Join(lines, "\n"))
}

// MaxLabName is the longest lab name: it becomes part of namespace (and
// container) names, clab-<lab>-<node>.
const MaxLabName = 40

// ValidLabName reports whether name can name a lab.
func ValidLabName(name string) bool { return nameRE.MatchString(name) && len(name) <= MaxLabName }

// MaxFileSize bounds what Load reads: topology files are a few hundred bytes.
const MaxFileSize = 1 << 20

// Load reads and validates a topology file. It reads only regular files of at most
// MaxFileSize bytes, so a scenario naming /dev/zero or a FIFO fails instead of
// reading forever or waiting for a writer.
func Load(path string) (*Topology, error) {
	// O_NONBLOCK: opening a FIFO without a writer returns at once (regular files ignore it).
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("topology: %s is not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("topology: %s is larger than %d bytes", path, MaxFileSize)
	}
	return Parse(path, b)
}

// Parse validates a topology held in memory; file names it in errors.
func Parse(file string, data []byte) (*Topology, error) {
	fail := func(field, format string, a ...any) error {
		return fmt.Errorf("%s: %s: %s", file, field, fmt.Sprintf(format, a...))
	}
	var raw rawFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, YAMLError(file, err)
	}
	if err := checkScalars(data); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if raw.Name == "" {
		return nil, fail("name", "missing (the lab name)")
	}
	if !ValidLabName(raw.Name) {
		return nil, fail("name", "%q is not a valid lab name (letters, digits, '-', '_'; at most %d)", raw.Name, MaxLabName)
	}
	t := &Topology{File: file, Name: raw.Name, Nodes: map[string]Node{}}
	if len(raw.Topology.Nodes) == 0 {
		return nil, fail("topology.nodes", "no nodes")
	}
	for name, rn := range raw.Topology.Nodes {
		field := "topology.nodes." + name
		if !nameRE.MatchString(name) {
			return nil, fail(field, "%q is not a valid node name", name)
		}
		if rn == nil {
			return nil, fail(field+".kind", "missing (linux or bridge)")
		}
		switch rn.Kind {
		case KindLinux:
		case KindBridge:
			if !ifaceRE.MatchString(name) {
				return nil, fail(field, "bridge name %q is not a valid interface name (at most 15 characters)", name)
			}
		case "":
			return nil, fail(field+".kind", "missing (linux or bridge)")
		default:
			return nil, fail(field+".kind", "%q is not supported (linux, bridge)", rn.Kind)
		}
		for _, k := range slices.Sorted(maps.Keys(rn.Labels)) {
			if rn.Labels[k] == "" {
				return nil, fail(field+".labels."+k, "%q: a label needs a value (containerlab's schema requires one)", rn.Labels[k])
			}
		}
		t.Nodes[name] = Node{Name: name, Kind: rn.Kind, Image: rn.Image, Labels: rn.Labels}
	}
	used := map[Endpoint]string{}
	for i, rl := range raw.Topology.Links {
		field := fmt.Sprintf("topology.links[%d].endpoints", i)
		if len(rl.Endpoints) != 2 {
			return nil, fail(field, "%q: a link has exactly two endpoints", rl.Endpoints)
		}
		var ends [2]Endpoint
		for j, s := range rl.Endpoints {
			f := fmt.Sprintf("%s[%d]", field, j)
			n, iface, ok := strings.Cut(s, ":")
			if !ok || n == "" || iface == "" {
				return nil, fail(f, "%q is not node:interface", s)
			}
			if _, ok := t.Nodes[n]; !ok {
				return nil, fail(f, "%q names node %q, which is not in topology.nodes", s, n)
			}
			if !ifaceRE.MatchString(iface) || iface == "lo" {
				return nil, fail(f, "%q: %q is not a valid interface name (at most 15 characters, not lo)", s, iface)
			}
			e := Endpoint{Node: n, Iface: iface}
			if prev, dup := used[e]; dup {
				return nil, fail(f, "%q is already used by %s", s, prev)
			}
			used[e] = f
			ends[j] = e
		}
		if ends[0].Node == ends[1].Node {
			return nil, fail(field, "%q: links node %q to itself", rl.Endpoints, ends[0].Node)
		}
		if t.Nodes[ends[0].Node].Kind == KindBridge && t.Nodes[ends[1].Node].Kind == KindBridge {
			return nil, fail(field, "%q links two bridges", rl.Endpoints)
		}
		t.Links = append(t.Links, Link{A: ends[0], B: ends[1]})
	}
	if len(t.Links) == 0 {
		return nil, errors.New(file + ": topology.links: no links")
	}
	return t, nil
}

// checkScalars checks the YAML types of the values lvslab reads as text, which
// yaml.v3 turns into Go strings whatever their type but containerlab's schema
// tells apart: the lab name, a node's kind and image and the link endpoints must
// be strings (name: 123 is an integer), and a label a string or a number not below
// zero. It reads data as a YAML-to-JSON validator does (aliases and merge keys
// resolved); Parse has already decoded data once, so its shape is right.
func checkScalars(data []byte) error {
	var doc any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return err
	}
	top := asMap(doc)
	if err := textValue("name", top["name"]); err != nil {
		return err
	}
	topology := asMap(top["topology"])
	nodes := asMap(topology["nodes"])
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		node := asMap(nodes[name])
		for _, key := range []string{"kind", "image"} {
			if err := textValue("topology.nodes."+name+"."+key, node[key]); err != nil {
				return err
			}
		}
		if image, ok := node["image"]; ok && image == nil {
			return fmt.Errorf("topology.nodes.%s.image: empty (name an image, or leave the key out)", name)
		}
		labels := asMap(node["labels"])
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			if err := labelValue("topology.nodes."+name+".labels."+k, labels[k]); err != nil {
				return err
			}
		}
	}
	links, _ := topology["links"].([]any)
	for i, l := range links {
		eps, _ := asMap(l)["endpoints"].([]any)
		for j, e := range eps {
			if err := textValue(fmt.Sprintf("topology.links[%d].endpoints[%d]", i, j), e); err != nil {
				return err
			}
		}
	}
	return nil
}

// asMap is a decoded YAML mapping with its keys as text, or nil.
func asMap(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, e := range m {
			out[fmt.Sprint(k)] = e
		}
		return out
	}
	return nil
}

// textValue fails unless v is a YAML string (a timestamp is text to a JSON
// validator, and null is reported as missing by Parse's own checks).
func textValue(field string, v any) error {
	switch v.(type) {
	case nil, string, time.Time:
		return nil
	}
	return fmt.Errorf("%s: %v is a YAML %s, not a string (quote it)", field, v, yamlType(v))
}

// labelValue fails unless v is a string or a number not below zero, as
// containerlab's schema wants a label (an empty one is reported by Parse).
func labelValue(field string, v any) error {
	var n float64
	switch x := v.(type) {
	case nil, string, time.Time:
		return nil
	case int:
		n = float64(x)
	case int64:
		n = float64(x)
	case uint64:
		n = float64(x)
	case float64:
		n = x
	default:
		return fmt.Errorf("%s: %v is a YAML %s: a label is a string or a number (quote it)", field, v, yamlType(v))
	}
	if n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return fmt.Errorf("%s: %v: a label is a string or a number not below zero (quote it)", field, v)
	}
	return nil
}

// yamlType names the YAML type of a decoded value.
func yamlType(v any) string {
	switch v.(type) {
	case bool:
		return "bool"
	case int, int64, uint64:
		return "int"
	case float64:
		return "float"
	case map[string]any, map[any]any:
		return "mapping"
	case []any:
		return "sequence"
	}
	return fmt.Sprintf("%T", v)
}
