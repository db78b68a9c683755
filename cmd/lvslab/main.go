// Command lvslab builds the classroom LVS lab from a scenario file, runs commands
// in its nodes, shows its state and removes it. Where the host kernel cannot do
// IPVS, labs live in a user-mode-linux sandbox kernel kept between commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/kmod"
	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/lvslab/lvslab/pkg/webd"
	"github.com/sirupsen/logrus"
)

const usage = `lvslab: the LVS (IPVS) lab as software

usage:
  lvslab up [--kernel auto|host|uml] [--name LAB] [--keep] SCENARIO
                                                        bring a lab up
  lvslab apply [--name LAB] SCENARIO                    bring a running lab to an edited scenario
  lvslab down [LAB...]                                  remove labs (all when none named)
  lvslab status [LAB]                                   labs, nodes, addresses, IPVS tables
  lvslab exec [--lab LAB] [-i] NODE -- COMMAND...       run a command in a node
  lvslab ipvs [--list|--save] [LAB]                     the director's table, as ipvsadm -Ln and ipvsadm-save -n
  lvslab verify [--client go|curl] [--json] [--junit FILE] [--keep] SCENARIO|LAB
                                                        run a scenario's checks (a fresh lab for a file)
  lvslab gc                                             remove every lab and sandbox left behind
  lvslab sandbox run -- COMMAND...                      run a command in a fresh sandbox kernel
  lvslab sandbox status|stop                            the kept sandbox kernel
`

// errExit carries a child's exit status up to main.
type errExit int

func (e errExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func main() {
	if sandbox.IsGuest() {
		sandbox.GuestMain()
	}
	// moby/ipvs runs modprobe once per process and warns when it fails; lvslab
	// loads the modules itself (pkg/kmod), so that warning is noise.
	logrus.SetLevel(logrus.ErrorLevel)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	var ee errExit
	switch {
	case errors.As(err, &ee):
		os.Exit(int(ee))
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case err != nil:
		fmt.Fprintln(os.Stderr, "lvslab:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		return flag.ErrHelp
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "up":
		return cmdUp(ctx, args)
	case "down":
		return cmdDown(ctx, args)
	case "apply":
		return cmdApply(ctx, args)
	case "status":
		return cmdStatus(ctx, args)
	case "exec":
		return cmdExec(ctx, args)
	case "ipvs":
		return cmdIPVS(ctx, args)
	case "verify":
		return cmdVerify(ctx, args)
	case "gc":
		return cmdGC(ctx, args)
	case "sandbox":
		return cmdSandbox(ctx, args)
	case "webd":
		return webd.Main(ctx)
	case "labs": // used across the sandbox boundary: recorded lab names, one a line
		names, err := store().List()
		for _, n := range names {
			fmt.Println(n)
		}
		return err
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	fmt.Fprint(os.Stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func store() state.Store { return state.Store{Dir: state.DefaultDir} }

func inSandbox() bool { return os.Getenv(sandbox.EnvInSandbox) != "" }

// hostCanIPVS reports whether this kernel has IPVS or can load it.
func hostCanIPVS() bool {
	if _, err := os.Stat("/proc/net/ip_vs"); err == nil {
		return true
	}
	l := &kmod.Loader{Dir: kmod.DefaultDir()}
	return l.Load("ip_vs") == nil
}

func self() string {
	s, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return s
}

// forward runs this lvslab command in the kept sandbox kernel, starting it if
// start is set, and passes its output and exit status through.
func forward(ctx context.Context, start bool, args ...string) error {
	var c *sandbox.Client
	var err error
	if start {
		t := time.Now()
		c, err = sandbox.Ensure(ctx, sandbox.DefaultDir, self())
		if err == nil && time.Since(t) > 100*time.Millisecond {
			fmt.Fprintf(os.Stderr, "✓ sandbox kernel (user-mode-linux) ready in %.1fs\n", time.Since(t).Seconds())
		}
	} else {
		c, err = sandbox.Dial(sandbox.DefaultDir)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	return forwardOn(ctx, c, nil, args...)
}

func forwardOn(ctx context.Context, c *sandbox.Client, stdin io.Reader, args ...string) error {
	dir, _ := os.Getwd()
	code, err := c.Exec(ctx, sandbox.Request{Argv: append([]string{self()}, args...), Env: sandbox.HostEnv(), Dir: dir}, stdin, os.Stdout, os.Stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return errExit(code)
	}
	return nil
}

// sandboxLabs lists the labs in the kept sandbox, if one runs.
func sandboxLabs(ctx context.Context) ([]string, bool) {
	c, err := sandbox.Dial(sandbox.DefaultDir)
	if err != nil {
		return nil, false
	}
	defer c.Close()
	var out strings.Builder
	dir, _ := os.Getwd()
	code, err := c.Exec(ctx, sandbox.Request{Argv: []string{self(), "labs"}, Env: sandbox.HostEnv(), Dir: dir}, nil, &out, io.Discard)
	if err != nil || code != 0 {
		return nil, true
	}
	return strings.Fields(out.String()), true
}

func cmdUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	kernel := fs.String("kernel", "auto", "where the lab runs: auto (host if it can do IPVS, else uml), host, uml")
	keep := fs.Bool("keep", false, "keep a half-built lab when a step fails, for inspection")
	name := fs.String("name", "", "the lab's name (default: the scenario's), to run one scenario twice")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("up: give one scenario file")
	}
	file := fs.Arg(0)
	// Validate before anything is started anywhere: bad input fails fast and clean.
	s, err := scenario.Load(file)
	if err != nil {
		return err
	}
	if *name != "" {
		if err := s.Rename(*name); err != nil {
			return fmt.Errorf("up: --name: %w", err)
		}
	}
	useHost := inSandbox()
	switch *kernel {
	case "host":
		useHost = true
	case "uml":
	case "auto":
		useHost = useHost || hostCanIPVS()
	default:
		return fmt.Errorf("up: --kernel %q: want auto, host or uml", *kernel)
	}
	if !useHost {
		fwd := []string{"up"}
		if *keep {
			fwd = append(fwd, "--keep")
		}
		if *name != "" {
			fwd = append(fwd, "--name", *name)
		}
		return forward(ctx, true, append(fwd, file)...)
	}
	r, err := scenario.DefaultRunner()
	if err != nil {
		return err
	}
	r.Keep = *keep
	t := time.Now()
	r.Log = func(step string, err error) {
		if err != nil {
			fmt.Fprintf(os.Stderr, "✗ %s\n", step)
		} else {
			fmt.Fprintf(os.Stderr, "✓ %s\n", step)
		}
	}
	lab, err := r.Up(ctx, s)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "lab %s is up in %.2fs\n", lab.Name, time.Since(t).Seconds())
	if hint := tryHint(s); hint != "" {
		fmt.Fprintf(os.Stderr, "  try: %s\n", hint)
	}
	return nil
}

func tryHint(s *scenario.Scenario) string {
	d, ok := s.Node(s.Director())
	if !ok || len(d.Services) == 0 || s.Topology.Nodes["client"].Name == "" {
		return ""
	}
	svc := d.Services[0]
	if svc.Protocol != "tcp" {
		return ""
	}
	return "lvslab exec client -- curl -s " + verify.URL(svc.Addr)
}

func cmdDown(ctx context.Context, args []string) error {
	local, err := store().List()
	if err != nil {
		return err
	}
	targets := args
	if len(targets) == 0 {
		targets = local
	}
	r, err := scenario.DefaultRunner()
	if err != nil {
		return err
	}
	var errs []error
	var remote []string
	for _, l := range targets {
		if slices.Contains(local, l) {
			err := r.Down(ctx, l)
			errs = append(errs, err)
			if err == nil {
				fmt.Fprintf(os.Stderr, "✓ lab %s removed\n", l)
			}
		} else {
			remote = append(remote, l)
		}
	}
	if inSandbox() {
		return errors.Join(errs...)
	}
	if labs, running := sandboxLabs(ctx); running {
		if len(args) == 0 {
			remote = labs
		}
		if len(remote) > 0 {
			errs = append(errs, forward(ctx, false, append([]string{"down"}, remote...)...))
		}
		if left, _ := sandboxLabs(ctx); len(left) == 0 {
			errs = append(errs, sandbox.Stop(ctx, sandbox.DefaultDir))
			fmt.Fprintln(os.Stderr, "✓ sandbox kernel stopped")
		}
	}
	return errors.Join(errs...)
}

func cmdStatus(ctx context.Context, args []string) error {
	local, err := store().List()
	if err != nil {
		return err
	}
	shown := 0
	for _, name := range local {
		if len(args) > 0 && !slices.Contains(args, name) {
			continue
		}
		l, err := store().Load(name)
		if err != nil {
			return err
		}
		if err := scenario.WriteStatus(os.Stdout, l); err != nil {
			return err
		}
		shown++
	}
	if inSandbox() {
		return nil
	}
	if labs, running := sandboxLabs(ctx); running {
		fmt.Printf("sandbox kernel (user-mode-linux) running, labs: %s\n", strings.Join(labs, ", "))
		if len(labs) > 0 {
			return forward(ctx, false, append([]string{"status"}, args...)...)
		}
		return nil
	}
	if shown == 0 {
		fmt.Println("no labs")
	}
	return nil
}

// findLab returns the recorded lab holding node (or named lab), on this kernel.
func findLab(lab, nodeName string) (*state.Lab, error) {
	names, err := store().List()
	if err != nil {
		return nil, err
	}
	var found []*state.Lab
	for _, name := range names {
		if lab != "" && name != lab {
			continue
		}
		l, err := store().Load(name)
		if err != nil {
			return nil, err
		}
		if nodeName == "" || slices.Contains(l.Nodes, nodeName) {
			found = append(found, l)
		}
	}
	switch len(found) {
	case 0:
		return nil, state.ErrNoLab
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("more than one lab matches; name one with --lab")
}

func cmdExec(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("exec", flag.ContinueOnError)
	lab := fs.String("lab", "", "the lab (needed when several labs have the node)")
	interactive := fs.Bool("i", false, "pass standard input to the command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 {
		return errors.New("exec: usage: lvslab exec [--lab LAB] NODE -- COMMAND...")
	}
	nodeName, argv := rest[0], rest[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return errors.New("exec: no command")
	}
	l, err := findLab(*lab, nodeName)
	if errors.Is(err, state.ErrNoLab) && !inSandbox() && sandbox.Running(sandbox.DefaultDir) {
		c, err := sandbox.Dial(sandbox.DefaultDir)
		if err != nil {
			return err
		}
		defer c.Close()
		var stdin io.Reader
		if *interactive {
			stdin = os.Stdin
		}
		return forwardOn(ctx, c, stdin, append([]string{"exec"}, args...)...)
	}
	if err != nil {
		return fmt.Errorf("exec: node %s: %w", nodeName, err)
	}
	n := scenario.Nodes(l)[nodeName]
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if *interactive {
		cmd.Stdin = os.Stdin
	}
	err = n.Run(cmd)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return errExit(ee.ExitCode())
	}
	return err
}

func cmdApply(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("apply", flag.ContinueOnError)
	name := fs.String("name", "", "the lab's name (default: the scenario's)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("apply: give one scenario file")
	}
	s, err := scenario.Load(fs.Arg(0))
	if err != nil {
		return err
	}
	if *name != "" {
		if err := s.Rename(*name); err != nil {
			return fmt.Errorf("apply: --name: %w", err)
		}
	}
	if _, err := store().Load(s.Name); errors.Is(err, state.ErrNoLab) && !inSandbox() && sandbox.Running(sandbox.DefaultDir) {
		return forward(ctx, false, append([]string{"apply"}, args...)...)
	}
	r, err := scenario.DefaultRunner()
	if err != nil {
		return err
	}
	changes, err := r.Apply(ctx, s)
	for _, c := range changes {
		fmt.Fprintf(os.Stderr, "  %s\n", c)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "✓ lab %s matches %s (%d changes)\n", s.Name, fs.Arg(0), len(changes))
	return nil
}

func cmdIPVS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ipvs", flag.ContinueOnError)
	list := fs.Bool("list", false, "only the ipvsadm -Ln layout")
	save := fs.Bool("save", false, "only the ipvsadm-save -n layout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	lab := fs.Arg(0)
	l, err := findLab(lab, "")
	if errors.Is(err, state.ErrNoLab) && !inSandbox() && sandbox.Running(sandbox.DefaultDir) {
		return forward(ctx, false, append([]string{"ipvs"}, args...)...)
	}
	if err != nil {
		return err
	}
	if l.Director == "" {
		return fmt.Errorf("lab %s has no director", l.Name)
	}
	t, err := ipvsadm.Read(node.New(l.Director, l.Namespaces[slices.Index(l.Nodes, l.Director)]))
	if err != nil {
		return err
	}
	both := *list == *save
	if *list || both {
		if err := ipvsadm.WriteList(os.Stdout, t); err != nil {
			return err
		}
	}
	if both {
		fmt.Println("\n# ipvsadm-save -n")
	}
	if *save || both {
		return ipvsadm.WriteSave(os.Stdout, t.Model())
	}
	return nil
}

func cmdGC(ctx context.Context, args []string) error {
	r, err := scenario.DefaultRunner()
	if err != nil {
		return err
	}
	labs, err := r.GC(ctx)
	for _, l := range labs {
		fmt.Fprintf(os.Stderr, "✓ lab %s removed\n", l)
	}
	if inSandbox() {
		return err
	}
	// Labs inside the sandbox kernel go with it: stop it (or kill what a crash left).
	return errors.Join(err, sandbox.Stop(ctx, sandbox.DefaultDir))
}

func cmdSandbox(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New("sandbox: run, serve, status or stop")
	}
	switch args[0] {
	case "run":
		argv := args[1:]
		if len(argv) > 0 && argv[0] == "--" {
			argv = argv[1:]
		}
		if len(argv) == 0 {
			return errors.New("sandbox run: no command")
		}
		cfg := sandbox.Config{}
		if os.Getenv("LVSLAB_SANDBOX_LOG") != "" {
			cfg.Log = os.Stderr
		}
		code, err := sandbox.Run(ctx, cfg, argv)
		if err != nil {
			return err
		}
		if code != 0 {
			return errExit(code)
		}
		return nil
	case "serve":
		fs := flag.NewFlagSet("sandbox serve", flag.ContinueOnError)
		dir := fs.String("dir", sandbox.DefaultDir, "directory for the sandbox's files")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		return sandbox.Serve(ctx, *dir, sandbox.Config{})
	case "status":
		if labs, running := sandboxLabs(ctx); running {
			fmt.Printf("running, labs: %s\n", strings.Join(labs, ", "))
		} else {
			fmt.Println("not running")
		}
		return nil
	case "stop":
		return sandbox.Stop(ctx, sandbox.DefaultDir)
	}
	return fmt.Errorf("sandbox: unknown command %q", args[0])
}
