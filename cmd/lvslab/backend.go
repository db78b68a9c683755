package main

import (
	"context"
	"fmt"
	"os"

	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/sandbox"
)

// Backend is where labs live: this kernel (local) or the sandbox kernel, which
// runs the same command line inside itself. Each method is one lvslab command.
type Backend interface {
	// Up builds a lab from a scenario file and returns once every web server
	// answers. On failure nothing of the lab is left, unless o.Keep.
	Up(ctx context.Context, o UpOptions) error
	// Apply brings a running lab to an edited scenario, changing only what differs.
	Apply(ctx context.Context, o ApplyOptions) error
	// Down removes the named labs (every lab when none is named). Removing a lab
	// that is not up is not an error.
	Down(ctx context.Context, labs []string) error
	// Status prints the named labs (every lab when none is named).
	Status(ctx context.Context, o StatusOptions) error
	// Exec runs a command in a node; its exit status comes back as errExit.
	Exec(ctx context.Context, o ExecOptions) error
	// IPVS prints a lab's director table as ipvsadm -Ln and ipvsadm-save -n do.
	IPVS(ctx context.Context, o IPVSOptions) error
	// Capture records an interface of a node: decoded lines or a pcap file.
	Capture(ctx context.Context, o CaptureOptions) error
	// Forward listens on this host and makes each connection from inside a node.
	Forward(ctx context.Context, o ForwardOptions) error
	// Grade scores running labs by a scenario's checks.
	Grade(ctx context.Context, o GradeOptions) error
	// Shell runs an interactive shell (or a command) in a node on a pseudo-terminal.
	Shell(ctx context.Context, o ShellOptions) error
	// Graph draws a running lab.
	Graph(ctx context.Context, o GraphOptions) error
	// Verify runs a scenario's checks against a fresh lab (a file) or a running
	// one (a name); a failed check comes back as errExit(1).
	Verify(ctx context.Context, o VerifyOptions) error
	// GC removes every lab and whatever a crash left behind (lvslab's Docker
	// engine included).
	GC(ctx context.Context) error
	// ImageBuild builds the node image and imports it into lvslab's Docker
	// engine, starting the engine if none runs.
	ImageBuild(ctx context.Context) error
}

// UpOptions are lvslab up's.
type UpOptions struct {
	Scenario string      // the file
	Name     string      // the lab's name, when not the scenario's
	Keep     bool        // keep a half-built lab
	Runtime  lab.Runtime // how the nodes are made: netns (default) or containerlab
}

// ApplyOptions are lvslab apply's.
type ApplyOptions struct {
	Scenario string
	Name     string
}

// ExecOptions are lvslab exec's.
type ExecOptions struct {
	Lab   string // needed when several labs have the node
	Node  string
	Argv  []string
	Stdin bool // pass standard input to the command
}

// IPVSOptions are lvslab ipvs's.
type IPVSOptions struct {
	Lab        string
	List, Save bool
	JSON       bool // jsonview.Table, as ipvs.schema.json describes it
}

// StatusOptions are lvslab status's.
type StatusOptions struct {
	Labs []string // every lab when empty
	JSON bool     // []jsonview.Lab, as status.schema.json describes it
}

// VerifyOptions are lvslab verify's.
type VerifyOptions struct {
	Target string // a scenario file, or a running lab's name
	Driver lab.Driver
	JSON   bool
	JUnit  string // a file to write JUnit XML to
	HTML   string // a file to write the HTML report to
	Keep   bool   // keep the fresh lab built for a file
	// AllowSkip exits 0 instead of 2 when checks were skipped and none failed.
	AllowSkip bool
	// Runtime makes the fresh lab of a scenario file: netns (default) or containerlab.
	Runtime lab.Runtime
	// ResetSchedulers re-creates each service before its first check, so that
	// rr, wrr, lblc and lblcr start afresh on a lab that has served traffic.
	ResetSchedulers bool
}

// chooseBackend decides, once per command, where its labs live: this kernel
// when lvslab runs inside the sandbox, when asked (--kernel host), or when this
// kernel can do IPVS and no sandbox kernel is running; the sandbox otherwise.
func (a *app) chooseBackend(ctx context.Context) (Backend, error) {
	local := &localBackend{app: a}
	if inSandbox() { // a command line forwarded from the host: its --kernel was honoured there
		return local, nil
	}
	switch a.kernel {
	case "host":
		return local, nil
	case "uml":
		return a.sandboxed(), nil
	case "auto":
	default:
		return nil, usageError{fmt.Errorf("--kernel %q: want auto, host or uml", a.kernel)}
	}
	if sandbox.Running(sandbox.Dir()) || !hostCanIPVS() {
		return a.sandboxed(), nil
	}
	return local, nil
}

func inSandbox() bool { return os.Getenv(sandbox.EnvInSandbox) != "" }

// hostCanIPVS reports whether this kernel has IPVS or can load it.
func hostCanIPVS() bool {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		return true
	}
	l := &kmod.Loader{Dir: kmod.DefaultDir()}
	return l.Load(lab.ModuleIPVS) == nil
}

// everyBackend lists every place labs may live, for gc: this kernel, and from
// the host the sandbox kernel too.
func (a *app) everyBackend() []Backend {
	if inSandbox() {
		return []Backend{&localBackend{app: a}}
	}
	return []Backend{&localBackend{app: a}, a.sandboxed()}
}
