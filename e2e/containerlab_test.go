package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	dockerimage "github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"
	"github.com/vishvananda/netlink"

	"github.com/lvslab/lvslab/internal/clitest"
	"github.com/lvslab/lvslab/pkg/clab"
	"github.com/lvslab/lvslab/pkg/engine"
	"github.com/lvslab/lvslab/pkg/image"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
)

// engineDir is where lvslab runs its Docker engine in the sandbox.
var engineDir = filepath.Join(filepath.Dir(state.DefaultDir), "engine")

// containersOf lists the engine's containers of a lab, by containerlab's label.
func containersOf(ctx context.Context, labName string) []string {
	e, err := engine.Connect(ctx, engineDir)
	Expect(err).NotTo(HaveOccurred())
	defer e.Close()
	cli := e.Client()
	cs, err := cli.ContainerList(ctx, container.ListOptions{All: true})
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, c := range cs {
		if c.Labels["containerlab"] == labName {
			out = append(out, strings.TrimPrefix(c.Names[0], "/"))
		}
	}
	return out
}

// dockerExec runs argv in a container as docker exec does and returns its output.
func dockerExec(ctx context.Context, name string, argv ...string) string {
	e, err := engine.Connect(ctx, engineDir)
	Expect(err).NotTo(HaveOccurred())
	defer e.Close()
	cli := e.Client()
	ex, err := cli.ContainerExecCreate(ctx, name, container.ExecOptions{Cmd: argv, AttachStdout: true, AttachStderr: true})
	Expect(err).NotTo(HaveOccurred())
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	Expect(err).NotTo(HaveOccurred())
	defer att.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := att.Reader.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return b.String()
}

// lvbridges lists the Linux bridges lvslab made for a container lab (their
// ifalias names the lab).
func lvbridges(labName string) []string {
	links, err := netlink.LinkList()
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Alias, "lvslab lab="+labName+" ") {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// shippedOn returns order, the shipped scenarios (scenarios/*.yaml, relative
// to the repository) to apply one after the other onto a lab of a topology
// file that was brought up with first, after checking that order and first
// are every scenario written for that topology. The order matters: a service
// re-created under another key (port 0 after port 80, a firewall mark) leaves
// the old connections with the old real-server objects, and verify then
// refuses to judge count-sensitive checks until they expire (2 minutes).
func shippedOn(topology, first string, order ...string) []string {
	root, err := clitest.Repo()
	if err != nil {
		panic(err)
	}
	files, _ := filepath.Glob(filepath.Join(root, "scenarios", "*.yaml"))
	var all []string
	for _, f := range files {
		s, err := scenario.Load(f)
		if err != nil {
			panic(err)
		}
		keepalived := false
		for _, n := range s.Spec.Nodes {
			keepalived = keepalived || n.Keepalived != nil
		}
		if filepath.Base(s.Topology.File) == topology && !keepalived { // keepalived in containers: not yet
			all = append(all, "scenarios/"+filepath.Base(f))
		}
	}
	want := append([]string{first}, order...)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		panic(fmt.Sprintf("the shipped scenarios on %s are %v; the containerlab specs go through %v", topology, all, want))
	}
	return order
}

// applyAndVerify applies a scenario onto a running lab and runs lvslab verify
// --reset-schedulers on it: every check passes, none is skipped. The lab has
// served the specs before, whose connections expire in TIME_WAIT as they
// will: when the model says a check came within its timer slack of such an
// expiry (it cannot know which came first, so it skips), verify runs once
// more, and that run must pass whole.
func applyAndVerify(name, file string) {
	_, stderr, code := lv("apply", "--name", name, file)
	Expect(code).To(Equal(0), stderr)
	results, stderr, code := verifyJSON("--reset-schedulers", name)
	if code == 2 && onlyTimingSkips(results) {
		AddReportEntry("verified again", fmt.Sprintf("%s: the model skipped a check for an expiry within its timer slack", file))
		results, stderr, code = verifyJSON("--reset-schedulers", name)
	}
	Expect(code).To(Equal(0), stderr)
	Expect(results).NotTo(BeEmpty())
	for _, r := range results {
		Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
		Expect(r.Skipped).To(BeFalse(), "%s: %s", r.Check, r.Message)
	}
}

// onlyTimingSkips reports whether every check that did not pass was skipped
// by the model for timing (and none failed).
func onlyTimingSkips(results []verify.Outcome) bool {
	for _, r := range results {
		if !r.Passed && (!r.Skipped || !strings.Contains(r.Message, "timing: ")) {
			return false
		}
	}
	return true
}

// upContainers brings a scenario up in containers under name, and returns its record.
func upContainers(name, file string) *state.Lab {
	start := time.Now()
	_, stderr, code := lv("up", "--runtime", "containerlab", "--name", name, file)
	Expect(code).To(Equal(0), stderr)
	GinkgoWriter.Printf("%s up in containers in %v\n", file, time.Since(start))
	l, err := state.Store{Dir: state.DefaultDir}.Load(name)
	Expect(err).NotTo(HaveOccurred())
	Expect(l.Runtime).To(Equal(lab.RuntimeContainerlab))
	return l
}

// downContainers takes a container lab down and checks that its containers,
// namespaces and bridges went.
func downContainers(ctx context.Context, name string) {
	_, stderr, code := lv("down", name)
	Expect(code).To(Equal(0), stderr)
	Expect(containersOf(ctx, name)).To(BeEmpty())
	Expect(namespacesOf(name)).To(BeEmpty())
	Expect(lvbridges(name)).To(BeEmpty())
}

// The containerlab runtime, each topology deployed once in Docker containers
// by containerlab's Go packages: every shipped scenario of that topology is
// applied onto it and passes lvslab verify, and scenarios are checked with the
// models' exact sequences, as on the netns runtime. In order: at the end the
// engine has nothing left but the node image, and gc stops it.
var _ = Describe("The containerlab runtime", Ordered, ContinueOnFailure, Label("containerlab", "slow"), func() {
	const nat, nat3, dr = "clabnat", "nat-thresholds-verify", "clabdr"
	var running *state.Lab
	dumpOnFailure(&running)

	AfterAll(func() {
		for _, name := range []string{nat, nat3, dr} { // after a failure: safe to repeat
			lv("down", name)
		}
	})

	Describe("on the NAT topology", func() {
		It("runs each node as a container named and labelled as containerlab names them, its web server inside", func(ctx context.Context) {
			running = upContainers(nat, "scenarios/nat-rr.yaml")
			Expect(containersOf(ctx, nat)).To(ConsistOf("clab-clabnat-client", "clab-clabnat-director", "clab-clabnat-web1", "clab-clabnat-web2"))
			// docker exec sees the lab's addresses inside the container.
			Expect(dockerExec(ctx, "clab-clabnat-director", "ip", "addr", "show", "eth1")).To(ContainSubstring("203.0.113.1/24"))
			Expect(dockerExec(ctx, "clab-clabnat-director", "hostname")).To(ContainSubstring("director"))
			// The web server is the image's lvslab, in the container's process
			// namespace and cgroup, writing to its file system.
			for _, web := range []string{"web1", "web2"} {
				c := "clab-clabnat-" + web
				Expect(dockerExec(ctx, c, "sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")).To(ContainSubstring(image.SelfPath + " webd"))
				Expect(dockerExec(ctx, c, "ls", "/var/log/lvslab")).To(ContainSubstring("webd-" + web + ".log"))
				var pid int
				for _, p := range running.Processes {
					if p.Role == "webd-"+web {
						pid = p.Pid
					}
				}
				e, err := engine.Connect(ctx, engineDir)
				Expect(err).NotTo(HaveOccurred())
				info, err := e.Client().ContainerInspect(ctx, c)
				e.Close()
				Expect(err).NotTo(HaveOccurred())
				Expect(os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))).To(Equal(must(os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.State.Pid)))), "%s's web server is in its container's cgroup", web)
			}
		})

		It("passes nat-rr's checks with the model's exact sequence", func() {
			results, stderr, code := verifyJSON(nat)
			Expect(code).To(Equal(0), stderr)
			Expect(results).NotTo(BeEmpty())
			for _, r := range results {
				Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
				Expect(r.Predicted).To(Equal(r.Observed))
			}
		})

		It("lvslab exec runs inside the container, as docker exec does", func() {
			// After the exact checks above (this one serves traffic).
			// The container's init (lvslab node-init), its hostname, its own curl.
			out, stderr, code := lv("exec", "--lab", nat, "director", "--", "cat", "/proc/1/cmdline")
			Expect(code).To(Equal(0), stderr)
			Expect(out).To(ContainSubstring("node-init"))
			out, _, code = lv("exec", "--lab", nat, "client", "--", "curl", "-s", "--max-time", "5", "http://203.0.113.1/")
			Expect(code).To(Equal(0))
			Expect(strings.TrimSpace(out)).To(BeElementOf("web1", "web2"))
			_, _, code = lv("exec", "--lab", nat, "web1", "--", "sh", "-c", "exit 7")
			Expect(code).To(Equal(7), "the exit status comes back")
		})

		DescribeTable("passes lvslab verify for every shipped scenario of its topology, applied onto it",
			applyAndVerify, entriesOf(nat, shippedOn("lvs-nat.clab.yml", "scenarios/nat-rr.yaml", "scenarios/nat-steps.yaml",
				"scenarios/nat-ppc.yaml", "scenarios/nat-pcc.yaml", "scenarios/nat-fwmark.yaml", "scenarios/nat-ipv6.yaml", "scenarios/nat-udp.yaml")))

		// Each scenario applied onto the running containers, then its model's
		// exact sequence on the kernel (wrr's mark and persistence start afresh
		// when the service's scheduler or persistence changes).
		DescribeTable("takes scenarios applied onto it, with the model's exact sequences",
			func(ctx context.Context, file string, edits []edit, srcs int) {
				if len(edits) > 0 {
					file = variant(file, edits...)
				}
				_, stderr, code := lv("apply", "--name", nat, file)
				Expect(code).To(Equal(0), stderr)
				if !filepath.IsAbs(file) {
					file = filepath.Join(repo, file)
				}
				s, err := scenario.Load(file)
				Expect(err).NotTo(HaveOccurred())
				sim := kernelModel(s, running)
				from := []netip.Addr{client}
				if srcs > 0 {
					added, remove, err := verify.AddSources(running.Handles()["client"], "eth1", netip.MustParsePrefix("203.0.113.140/24"), srcs)
					Expect(err).NotTo(HaveOccurred())
					defer func() { Expect(remove()).To(Succeed()) }()
					from = added
				}
				// Client ports from a pool at a random start, never one the
				// director still keeps an entry for (TIME_WAIT, 2 minutes) from
				// the scenarios before: such a SYN is dropped, and retried.
				ports := verify.NewSourcePorts(uint16(33000 + rand.IntN(25000)))
				for _, src := range from {
					got := verify.HTTPClient{From: running.Handles()["client"], Source: src, Ports: ports}.Get(ctx, "http://203.0.113.1/", 4)
					Expect(got.Errors).To(BeEmpty())
					var want []string
					for range 4 {
						want = append(want, sim.Schedule(verify.Request{Src: src, Dst: vip}, false))
					}
					Expect(got.Sequence).To(Equal(want), divergence(want, got.Sequence))
				}
			},
			Entry("wrr 3:1 (nat-rr, edited)", "scenarios/nat-rr.yaml", []edit{scheduler(lab.WRR), weight("web1", 3)}, 0),
			Entry("nat-ppc (persistent rr, 3 clients)", "scenarios/nat-ppc.yaml", nil, 3),
			Entry("nat-fwmark (firewall mark 10, persistent)", "scenarios/nat-fwmark.yaml", nil, 2),
		)

		// After the verify tables: a slow shell spec must not move their
		// connections against the TIME_WAIT entries of the specs before.
		It("lvslab shell opens a shell in the container on a terminal the engine allocates: prompt, size and its changes, Ctrl-C, the exit status (tmux)", func() {
			tm := clitest.StartTmux(GinkgoT(), 100, 30, fmt.Sprintf("cd %s && %s shell --lab %s client; echo EXIT=$?; sleep 60", cli.Dir, cli.Bin, nat))
			keys := tm.Keys
			see := func(re string) {
				GinkgoHelper()
				tm.WaitFor("the container's shell", re)
			}
			see(`(?m)^root@client:\S*#\s*$`)
			keys("cat /etc/hostname; stty size", "Enter")
			see(`(?m)^client\s*\n30 100\s*$`) // the container's own files, the window's size
			tm.Resize(120, 40)
			keys("clear; stty size", "Enter")
			see(`(?m)^40 120\s*$`)
			keys("clear; sleep 30", "Enter")
			time.Sleep(time.Second)
			keys("C-c")
			keys("echo alive-$((1+1))", "Enter")
			see(`(?m)^alive-2\s*$`) // Ctrl-C stopped sleep in the container, not lvslab
			keys("exit 3", "Enter")
			see(`(?m)^EXIT=3\s*$`)
		})

		It("lvslab shell in a container takes the size and its changes in band, as the sandbox's agent sends them", func() {
			// What lvslab on the host sends into the sandbox: the first size in
			// LVSLAB_TTY_SIZE, later ones as an escape sequence in the input.
			cmd := exec.Command(cli.Bin, "shell", "--lab", nat, "client")
			cmd.Dir = cli.Dir
			cmd.Env = append(os.Environ(), "LVSLAB_TTY_SIZE=30x100")
			in, err := cmd.StdinPipe()
			Expect(err).NotTo(HaveOccurred())
			out := gbytes.NewBuffer()
			cmd.Stdout = out
			Expect(cmd.Start()).To(Succeed())
			_, _ = io.WriteString(in, "stty size\n")
			Eventually(out).WithTimeout(20 * time.Second).Should(gbytes.Say(`(?m)^30 100\r?$`))
			_, _ = io.WriteString(in, "\x1b]lvslab-winsize;40;120\x07")
			time.Sleep(500 * time.Millisecond) // the engine applies the size
			_, _ = io.WriteString(in, "stty size\nexit 4\n")
			err = cmd.Wait()
			var ee *exec.ExitError
			Expect(errors.As(err, &ee)).To(BeTrue(), "%v: %s", err, out.Contents())
			Expect(ee.ExitCode()).To(Equal(4))
			Expect(out).To(gbytes.Say(`(?m)^40 120\r?$`))
		})

		It("goes with lvslab down: containers, namespaces and bridges", func(ctx context.Context) {
			downContainers(ctx, nat)
		})
	})

	Describe("on the three-server NAT topology", func() {
		// lvslab verify --runtime containerlab builds the fresh lab of a
		// scenario file in containers; kept, it takes the other scenarios.
		It("lvslab verify --runtime containerlab passes nat-thresholds on a fresh lab in containers", func() {
			results, stderr, code := verifyJSON("--keep", "--runtime", "containerlab", "scenarios/nat-thresholds.yaml")
			Expect(code).To(Equal(0), stderr)
			Expect(results).NotTo(BeEmpty())
			for _, r := range results {
				Expect(r.Passed).To(BeTrue(), "%s: %s", r.Check, r.Message)
			}
			var err error
			running, err = state.Store{Dir: state.DefaultDir}.Load(nat3)
			Expect(err).NotTo(HaveOccurred())
			Expect(running.Runtime).To(Equal(lab.RuntimeContainerlab))
		})

		DescribeTable("passes lvslab verify for every shipped scenario of its topology, applied onto it",
			applyAndVerify, entriesOf(nat3, shippedOn("lvs-nat3.clab.yml", "scenarios/nat-thresholds.yaml",
				"scenarios/nat-dh.yaml", "scenarios/nat-lc.yaml", "scenarios/nat-nq.yaml", "scenarios/nat-sed.yaml", "scenarios/nat-sh.yaml", "scenarios/nat-wlc.yaml", "scenarios/nat-wrr.yaml")))

		It("goes with lvslab down, and the engine keeps nothing but the node image", func(ctx context.Context) {
			downContainers(ctx, nat3)
			e, err := engine.Connect(ctx, engineDir)
			Expect(err).NotTo(HaveOccurred())
			defer e.Close()
			cs, err := e.Client().ContainerList(ctx, container.ListOptions{All: true})
			Expect(err).NotTo(HaveOccurred())
			Expect(cs).To(BeEmpty(), "containers")
			nets, err := e.Client().NetworkList(ctx, network.ListOptions{})
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, n := range nets {
				names = append(names, n.Name)
			}
			Expect(names).To(HaveEach(BeElementOf("bridge", "host", "none")), "networks: Docker's own only")
			imgs, err := e.Client().ImageList(ctx, dockerimage.ListOptions{All: true})
			Expect(err).NotTo(HaveOccurred())
			Expect(imgs).To(HaveLen(1), "images")
			Expect(imgs[0].RepoTags).To(ContainElement(clab.NodeImage("")))
		})
	})

	Describe("with a node that cannot start", func() {
		It("fails naming the node and its image, and leaves nothing", func(ctx context.Context) {
			_, stderr, code := lv("up", "--runtime", "containerlab", "e2e/testdata/missing-image.yaml")
			Expect(code).To(Equal(1))
			Expect(stderr).To(ContainSubstring("web2"))
			Expect(stderr).To(ContainSubstring("lvslab/missing:1"))
			Expect(containersOf(ctx, "noimage")).To(BeEmpty())
			Expect(namespacesOf("noimage")).To(BeEmpty())
			Expect(lvbridges("noimage")).To(BeEmpty())
			_, err := state.Store{Dir: state.DefaultDir}.Load("noimage")
			Expect(err).To(MatchError(state.ErrNoLab))
		})
	})

	Describe("on the DR segment", Label("arp"), func() {
		// dr-arp-flux: the real servers' VIP on lo, arp_ignore/arp_announce left at 0.
		It("reproduces ARP flux: the director and both real servers answer for the VIP", func(ctx context.Context) {
			running = upContainers(dr, "scenarios/dr-arp-flux.yaml")
			results, stderr, code := verifyJSON(dr)
			Expect(code).To(Equal(0), stderr)
			Expect(results).To(HaveLen(1))
			Expect(results[0].Passed).To(BeTrue(), results[0].Message)
			var who []string
			for _, r := range results[0].Replies {
				who = append(who, r.Node)
			}
			Expect(who).To(ConsistOf("director", "web1", "web2"))
		})

		DescribeTable("passes lvslab verify for every shipped scenario of its topology, applied onto it",
			applyAndVerify, entriesOf(dr, shippedOn("lvs-dr.clab.yml", "scenarios/dr-arp-flux.yaml", "scenarios/dr-rr.yaml", "scenarios/tun-rr.yaml")))

		// After a crash of lvslab (its record lost), gc finds the containers by
		// lvslab's label and the bridge by its alias.
		It("gc removes a lab whose record is lost: its containers, bridge and links, then the engine", func(ctx context.Context) {
			Expect(containersOf(ctx, dr)).To(HaveLen(4))
			Expect(lvbridges(dr)).To(HaveLen(1))
			Expect(os.Remove(filepath.Join(state.DefaultDir, dr+".json"))).To(Succeed())
			_, stderr, code := lv("gc")
			Expect(code).To(Equal(0), stderr)
			Expect(namespacesOf(dr)).To(BeEmpty())
			Expect(lvbridges(dr)).To(BeEmpty())
			Expect(engine.Processes(engineDir)).To(BeEmpty(), "gc stops lvslab's engine once no lab needs it")
			Expect(processesNamed("webd")).To(BeEmpty(), "the lost lab's web servers went too")
		})
	})
})

// entriesOf makes one table entry per scenario file, applied onto lab name.
func entriesOf(name string, files []string) []TableEntry {
	var out []TableEntry
	for _, f := range files {
		out = append(out, Entry(filepath.Base(f), name, f))
	}
	return out
}

// kernelModel is the model of a running lab's first service as the kernel
// lists it now (its real servers in the kernel's order, reversed into
// insertion order), with the scenario's persistence.
func kernelModel(s *scenario.Scenario, l *state.Lab) *verify.Sim {
	d, _ := s.Spec.Node(s.Director())
	svc := d.Services[0]
	k, err := verify.RunningKernel()
	Expect(err).NotTo(HaveOccurred())
	sim, err := verify.NewSim(k, svc.Scheduler, svc.SchedFlags...)
	Expect(err).NotTo(HaveOccurred())
	dests := readIPVS(l).Services[0].Destinations
	for i := len(dests) - 1; i >= 0; i-- {
		a := netip.MustParseAddr(dests[i].Address.String())
		sim.AddServer(s.Spec.OwnerOf(a), netip.AddrPortFrom(a, dests[i].Port), dests[i].Weight)
	}
	if svc.Persistent {
		sim.Persist = &verify.Persistence{Timeout: time.Duration(svc.Timeout) * time.Second, Netmask: svc.Netmask}
	}
	return sim
}

// must is v, failing the spec on err.
func must[T any](v T, err error) T {
	GinkgoHelper()
	Expect(err).NotTo(HaveOccurred())
	return v
}
