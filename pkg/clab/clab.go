// Package clab maps a topology lvslab has read (pkg/topo) to what containerlab
// needs to deploy it as one lab of containers, and renders the containerlab
// topology file lvslab would deploy. It names every piece as containerlab
// v0.79.0 does (containers clab-<lab>-<node>, the labels it puts on them) and
// adds lvslab's own label, so a lab's containers can be found again after a crash.
//
// It is pure: no container engine, no containerlab import. The containerlab
// runtime (beside pkg/topo's netns runtime) is its user: it creates the Linux
// bridges named here, deploys the rendered file, and finds the containers by
// their labels.
package clab

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/lvslab/lvslab/pkg/topo"
)

// Docker labels containerlab v0.79.0 puts on every node container, as its
// core.addDefaultLabels does. The keys are containerlab's own constants, in
// constants/labels.go of github.com/srl-labs/containerlab@v0.79.0.
const (
	LabelContainerlab = "containerlab"       // the lab name
	LabelNodeName     = "clab-node-name"     // the node's name in the topology
	LabelLongName     = "clab-node-longname" // the container's name, clab-<lab>-<node>
	LabelNodeKind     = "clab-node-kind"     // the node's kind (linux)
	LabelNodeType     = "clab-node-type"     // the node's type; lvslab sets none
	LabelNodeGroup    = "clab-node-group"    // the node's group; lvslab sets none
	LabelNodeLabDir   = "clab-node-lab-dir"  // the node's directory under the lab directory
	LabelTopoFile     = "clab-topo-file"     // the absolute path of the deployed topology file
	LabelOwner        = "clab-owner"         // $SUDO_USER, else $USER, of whoever deployed
	LabelGitBranch    = "clab-git-branch"    // when the topology file is in a git work tree
	LabelGitHash      = "clab-git-hash"      // likewise
)

// containerlabLabels are all the label keys containerlab v0.79.0 defines
// (constants/labels.go), the ones above and those it puts on other objects
// (its management network, its tool containers). A topology file must not set
// any of them: containerlab overwrites its own on deploy.
var containerlabLabels = []string{
	LabelContainerlab, LabelNodeName, LabelLongName, LabelNodeKind, LabelNodeType,
	LabelNodeGroup, LabelNodeLabDir, LabelTopoFile, "clab-mgmt-net-bridge", LabelOwner,
	"tool-type", "clab-root-node-name", "clab-root-node-longname", LabelGitBranch, LabelGitHash,
}

// LabelLab is lvslab's own label, on every container of a lab lvslab deployed;
// its value is the lab name. `docker ps --filter label=lvslab` lists every such
// container, so gc finds leftovers of labs whose record is gone, and no
// container deployed by someone else's containerlab is ever taken for lvslab's.
const LabelLab = "lvslab"

// PullPolicy is containerlab's image-pull-policy.
type PullPolicy string

// Pull policies, spelt as containerlab's types.PullPolicyValue (it compares
// them without regard to case).
const (
	PullAlways       PullPolicy = "Always"
	PullNever        PullPolicy = "Never"
	PullIfNotPresent PullPolicy = "IfNotPresent" // containerlab's default
)

// NetworkMode is containerlab's network-mode of a node.
type NetworkMode string

// NetworkNone gives a container no eth0 and no management network: the node has
// only lo and its topology links, as with the netns runtime, so nothing but the
// lab's own routes decides where its traffic goes (a NAT real server's default
// route must point at the director, not at a management gateway).
const NetworkNone NetworkMode = "none"

// ImageRepository is the repository of lvslab's node image, built and loaded
// into the local engine by lvslab (it is in no registry).
const ImageRepository = "lvslab/node"

// NodeImage is lvslab's node image for an lvslab version ("" gives "latest").
func NodeImage(version string) string {
	if version == "" {
		version = "latest"
	}
	return ImageRepository + ":" + version
}

// DefaultCmd keeps a container of lvslab's image running: an imported image has
// no command of its own. lvslab programs each node from outside, in its network
// namespace, so the container needs nothing else.
const DefaultCmd = "sleep infinity"

// Options are the choices Map leaves to its caller.
type Options struct {
	// Image is the image of linux nodes whose topology names none (default
	// NodeImage("")). It exists only in the local engine, so it is never pulled.
	Image string
	// Cmd runs in containers of Image (default DefaultCmd). A node whose file
	// names its own image keeps that image's command.
	Cmd string
}

// Lab is a topology as containerlab deploys it for one lab.
type Lab struct {
	Name    string   // lab name: containerlab's topology name, and LabelContainerlab and LabelLab
	Source  string   // the topology file it came from
	Nodes   []Node   // linux nodes, sorted by name
	Bridges []Bridge // bridge nodes, sorted by node name
	Links   []Link   // in the file's order
}

// Node is one linux node: one container.
type Node struct {
	Name        string            // the node's name in the topology (LabelNodeName)
	Container   string            // the container's name, clab-<lab>-<node> (LabelLongName)
	Kind        string            // topo.KindLinux
	Image       string            // the file's image, else Options.Image
	PullPolicy  PullPolicy        // PullNever for Options.Image; "" (containerlab's default) for the file's
	Cmd         string            // Options.Cmd for Options.Image; "" keeps the image's own
	NetworkMode NetworkMode       // NetworkNone
	Labels      map[string]string // written into the topology: the file's labels and LabelLab
}

// Bridge is a bridge node: a Linux bridge lvslab creates, before deploy, in the
// network namespace containerlab runs in (containerlab's kind bridge expects it
// there), and removes after destroy. Its ports there are the host ends of the
// links to it (Link.A or Link.B with Node == Name).
type Bridge struct {
	Node  string // the bridge node's name in lvslab's topology
	Name  string // the Linux bridge, and the node's name in the rendered topology (BridgeName)
	Alias string // for the bridge's ifalias, so gc knows lvslab's bridges and their lab (BridgeAlias)
}

// Link is one link of the topology with the endpoint names containerlab sees: a
// linux node's end as the file names it, a bridge's end as the bridge's Linux
// name and the port's name in the bridge's namespace (PortName).
type Link struct {
	A, B topo.Endpoint
	File topo.Link // the link as the topology file writes it
}

// ContainerName is the name containerlab gives a node's container with its
// default prefix, and the netns runtime gives the node's namespace.
func ContainerName(lab, node string) string { return topo.NSName(lab, node) }

// IFNameSize is the longest Linux interface name (IFNAMSIZ less its NUL).
const IFNameSize = 15

// BridgeName is the Linux bridge for bridge node of lab: "<lab>.<node>" when
// that fits in IFNameSize, else "lvb-" and 11 hex digits of a hash of both.
// Lab and node names have no '.', so a readable name is one lab's and one
// node's only; a hashed one has no '.', so it never equals a readable one.
func BridgeName(lab, node string) string {
	if s := lab + "." + node; len(s) <= IFNameSize {
		return s
	}
	return hashName("lvb-", lab, node)
}

// PortName is the bridge's port, in the namespace containerlab runs in, that
// the link to bridge's interface iface (as the file names it) ends in: "lvp-"
// and 11 hex digits of a hash of the three. Ports of every lab share that
// namespace, so the file's names (web1, ...) cannot be used there, and few
// "<lab>.<bridge>.<iface>" fit in IFNameSize. (containerlab names the host ends
// of its stitched links the same way, "clab-s-" and a hash.)
func PortName(lab, bridge, iface string) string { return hashName("lvp-", lab, bridge, iface) }

// hashName is prefix and as many hex digits of a hash of parts as fit in
// IFNameSize.
func hashName(prefix string, parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return prefix + hex.EncodeToString(sum[:])[:IFNameSize-len(prefix)]
}

// BridgeAlias is the ifalias lvslab gives a lab's bridge.
func BridgeAlias(lab, node string) string { return "lvslab lab=" + lab + " bridge=" + node }

// Map maps t to the containerlab lab named lab. It fails, naming the file and
// the field, if the lab name is not one lvslab accepts, a node's labels set one
// of containerlab's or lvslab's label keys, or two interface names lvslab
// derives for the host side would be one.
func Map(t *topo.Topology, lab string, o Options) (*Lab, error) {
	if !topo.ValidLabName(lab) {
		return nil, fmt.Errorf("%s: lab name %q is not valid (letters, digits, '-', '_'; at most %d)", t.File, lab, topo.MaxLabName)
	}
	if o.Image == "" {
		o.Image = NodeImage("")
	}
	if o.Cmd == "" {
		o.Cmd = DefaultCmd
	}
	l := &Lab{Name: lab, Source: t.File}
	hostNames := map[string]string{} // interface names in containerlab's namespace -> what they are for
	claim := func(name, what string) error {
		if prev, dup := hostNames[name]; dup {
			return fmt.Errorf("%s: lab %q: %s and %s would both be %q in the host namespace", t.File, lab, prev, what, name)
		}
		hostNames[name] = what
		return nil
	}
	names := make([]string, 0, len(t.Nodes))
	for name := range t.Nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		n := t.Nodes[name]
		switch n.Kind {
		case topo.KindBridge:
			b := Bridge{Node: name, Name: BridgeName(lab, name), Alias: BridgeAlias(lab, name)}
			if err := claim(b.Name, "bridge "+name); err != nil {
				return nil, err
			}
			if _, clash := t.Nodes[b.Name]; clash {
				// Only a hashed name can clash (node names have no '.').
				return nil, fmt.Errorf("%s: lab %q: bridge %s would be named %s, as a node of the topology is", t.File, lab, name, b.Name)
			}
			l.Bridges = append(l.Bridges, b)
		case topo.KindLinux:
			node, err := linuxNode(t.File, lab, n, o)
			if err != nil {
				return nil, err
			}
			l.Nodes = append(l.Nodes, node)
		default:
			return nil, fmt.Errorf("%s: topology.nodes.%s.kind: %q is not supported (linux, bridge)", t.File, name, n.Kind)
		}
	}
	end := func(e topo.Endpoint) (topo.Endpoint, error) {
		if t.Nodes[e.Node].Kind != topo.KindBridge {
			return e, nil
		}
		p := topo.Endpoint{Node: BridgeName(lab, e.Node), Iface: PortName(lab, e.Node, e.Iface)}
		return p, claim(p.Iface, "bridge port "+e.String())
	}
	for _, fl := range t.Links {
		a, err := end(fl.A)
		if err != nil {
			return nil, err
		}
		b, err := end(fl.B)
		if err != nil {
			return nil, err
		}
		l.Links = append(l.Links, Link{A: a, B: b, File: fl})
	}
	return l, nil
}

// linuxNode maps one linux node.
func linuxNode(file, lab string, n topo.Node, o Options) (Node, error) {
	node := Node{
		Name:        n.Name,
		Container:   ContainerName(lab, n.Name),
		Kind:        topo.KindLinux,
		Image:       n.Image,
		NetworkMode: NetworkNone,
		Labels:      map[string]string{},
	}
	if node.Image == "" {
		node.Image, node.PullPolicy, node.Cmd = o.Image, PullNever, o.Cmd
	}
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		if k == LabelLab || slices.Contains(containerlabLabels, k) {
			return Node{}, fmt.Errorf("%s: topology.nodes.%s.labels.%s: %q is set by %s itself", file, n.Name, k, k, labelOwner(k))
		}
		node.Labels[k] = n.Labels[k]
	}
	node.Labels[LabelLab] = lab
	return node, nil
}

func labelOwner(k string) string {
	if k == LabelLab {
		return "lvslab"
	}
	return "containerlab"
}

// Selector is the labels every container of the lab carries, and no other
// container carries both: a filter for the engine (label=k=v for each).
func (l *Lab) Selector() map[string]string {
	return map[string]string{LabelContainerlab: l.Name, LabelLab: l.Name}
}

// ContainerLabels is what the container of n will carry once containerlab has
// deployed the rendered topology from topoFile (an absolute path): n.Labels and
// the labels containerlab adds whose values follow from the topology alone.
// containerlab also sets LabelNodeType and LabelNodeGroup (empty for lvslab's
// nodes), LabelNodeLabDir and LabelOwner (from its environment) and the git
// labels (when topoFile is in a git work tree); they are not here.
func (l *Lab) ContainerLabels(n Node, topoFile string) map[string]string {
	out := make(map[string]string, len(n.Labels)+5)
	for k, v := range n.Labels {
		out[k] = v
	}
	out[LabelContainerlab] = l.Name
	out[LabelNodeName] = n.Name
	out[LabelLongName] = n.Container
	out[LabelNodeKind] = n.Kind
	out[LabelTopoFile] = topoFile
	return out
}
