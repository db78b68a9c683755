package clab

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// The containerlab topology file as Marshal writes it: only keys of
// containerlab's schema.
type file struct {
	Name     string `yaml:"name"`
	Prefix   string `yaml:"prefix"`
	Topology struct {
		Nodes map[string]fileNode `yaml:"nodes"`
		Links []fileLink          `yaml:"links"`
	} `yaml:"topology"`
}

type fileNode struct {
	Kind            string            `yaml:"kind"`
	Image           string            `yaml:"image,omitempty"`
	ImagePullPolicy PullPolicy        `yaml:"image-pull-policy,omitempty"`
	Cmd             string            `yaml:"cmd,omitempty"`
	NetworkMode     NetworkMode       `yaml:"network-mode,omitempty"`
	Labels          map[string]string `yaml:"labels,omitempty"`
}

type fileLink struct {
	Endpoints []string `yaml:"endpoints,flow"`
}

// containerPrefix is containerlab's default prefix of container names, written
// out so that the names do not depend on a default.
const containerPrefix = "clab"

// Marshal renders l as a containerlab topology file. Once l's bridges exist (up)
// in the namespace containerlab runs in, `containerlab deploy -t FILE` deploys
// it: containers named clab-<lab>-<node> carrying LabelLab, each with the file's
// links and no management interface.
func (l *Lab) Marshal() ([]byte, error) {
	var f file
	f.Name = l.Name
	f.Prefix = containerPrefix
	f.Topology.Nodes = make(map[string]fileNode, len(l.Nodes)+len(l.Bridges))
	for _, n := range l.Nodes {
		f.Topology.Nodes[n.Name] = fileNode{
			Kind:            n.Kind,
			Image:           n.Image,
			ImagePullPolicy: n.PullPolicy,
			Cmd:             n.Cmd,
			NetworkMode:     n.NetworkMode,
			Labels:          n.Labels,
		}
	}
	for _, b := range l.Bridges {
		if _, dup := f.Topology.Nodes[b.Name]; dup {
			return nil, fmt.Errorf("lab %q: bridge %s would be named %s, as a linux node is", l.Name, b.Node, b.Name)
		}
		f.Topology.Nodes[b.Name] = fileNode{Kind: "bridge"}
	}
	for _, k := range l.Links {
		f.Topology.Links = append(f.Topology.Links, fileLink{Endpoints: []string{k.A.String(), k.B.String()}})
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# containerlab topology of lvslab lab %q, from %q; written by lvslab.\n", l.Name, l.Source)
	if len(l.Bridges) > 0 {
		buf.WriteString("# Its bridges must exist before `containerlab deploy -t` (lvslab creates them):\n")
		for _, b := range l.Bridges {
			fmt.Fprintf(&buf, "#   ip link add %s type bridge && ip link set %s up\n", b.Name, b.Name)
		}
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&f); err != nil {
		return nil, fmt.Errorf("lab %q: render containerlab topology: %w", l.Name, err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("lab %q: render containerlab topology: %w", l.Name, err)
	}
	return buf.Bytes(), nil
}

// WriteFile writes Marshal's file to path.
func (l *Lab) WriteFile(path string) error {
	b, err := l.Marshal()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("lab %q: %w", l.Name, err)
	}
	return nil
}
