package e2e

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"

	"github.com/lvslab/lvslab/pkg/engine"
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

// The NAT topology deployed once in Docker containers by containerlab's Go
// packages; scenarios applied onto it are checked with the models' exact
// sequences, as on the netns runtime.
var _ = Describe("The containerlab runtime", Ordered, Label("containerlab", "slow"), func() {
	const name = "clabnat"
	var running *state.Lab
	dumpOnFailure(&running)

	BeforeAll(func() {
		start := time.Now()
		_, stderr, code := lv("up", "--runtime", "containerlab", "--name", name, "scenarios/nat-rr.yaml")
		Expect(code).To(Equal(0), stderr)
		GinkgoWriter.Printf("containerlab NAT lab up in %v\n", time.Since(start))
		var err error
		running, err = state.Store{Dir: state.DefaultDir}.Load(name)
		Expect(err).NotTo(HaveOccurred())
		Expect(running.Runtime).To(Equal(lab.RuntimeContainerlab))
	})

	AfterAll(func(ctx context.Context) {
		_, stderr, code := lv("down", name)
		Expect(code).To(Equal(0), stderr)
		Expect(containersOf(ctx, name)).To(BeEmpty())
		Expect(namespacesOf(name)).To(BeEmpty())
		Expect(lvbridges(name)).To(BeEmpty())
	})

	It("runs each node as a container named and labelled as containerlab names them", func(ctx context.Context) {
		Expect(containersOf(ctx, name)).To(ConsistOf("clab-clabnat-client", "clab-clabnat-director", "clab-clabnat-web1", "clab-clabnat-web2"))
		// docker exec sees the lab's addresses inside the container.
		Expect(dockerExec(ctx, "clab-clabnat-director", "ip", "addr", "show", "eth1")).To(ContainSubstring("203.0.113.1/24"))
		Expect(dockerExec(ctx, "clab-clabnat-director", "hostname")).To(ContainSubstring("director"))
	})

	It("passes nat-rr's checks with the model's exact sequence", func() {
		results, stderr, code := verifyJSON(name)
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
		out, stderr, code := lv("exec", "--lab", name, "director", "--", "cat", "/proc/1/cmdline")
		Expect(code).To(Equal(0), stderr)
		Expect(out).To(ContainSubstring("node-init"))
		out, _, code = lv("exec", "--lab", name, "client", "--", "curl", "-s", "--max-time", "5", "http://203.0.113.1/")
		Expect(code).To(Equal(0))
		Expect(strings.TrimSpace(out)).To(BeElementOf("web1", "web2"))
		_, _, code = lv("exec", "--lab", name, "web1", "--", "sh", "-c", "exit 7")
		Expect(code).To(Equal(7), "the exit status comes back")
	})

	// Each scenario applied onto the running containers, then its model's
	// exact sequence on the kernel (wrr's mark and persistence start afresh
	// when the service's scheduler or persistence changes).
	DescribeTable("takes scenarios applied onto it",
		func(ctx context.Context, file string, edits []edit, srcs int) {
			if len(edits) > 0 {
				file = variant(file, edits...)
			}
			_, stderr, code := lv("apply", "--name", name, file)
			Expect(code).To(Equal(0), stderr)
			if !filepath.IsAbs(file) {
				file = filepath.Join(repo, file)
			}
			s, err := scenario.Load(file)
			Expect(err).NotTo(HaveOccurred())
			sim := kernelModel(s, running)
			from := []netip.Addr{client}
			if srcs > 0 {
				// Removed before the lab goes (AfterAll runs before this spec's cleanups).
				added, remove, err := verify.AddSources(running.Handles()["client"], "eth1", netip.MustParsePrefix("203.0.113.140/24"), srcs)
				Expect(err).NotTo(HaveOccurred())
				defer func() { Expect(remove()).To(Succeed()) }()
				from = added
			}
			for _, src := range from {
				got := verify.HTTPClient{From: running.Handles()["client"], Source: src}.Get(ctx, "http://203.0.113.1/", 4)
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
})

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

// The DR segment in containers reproduces ARP flux (dr-arp-flux: the real
// servers' VIP on lo, arp_ignore/arp_announce left at 0); after a crash of
// lvslab (its record lost), gc finds the containers by lvslab's label and the
// bridge by its alias.
var _ = Describe("The containerlab runtime on the DR segment", Ordered, Label("containerlab", "slow", "arp"), func() {
	const name = "clabdr"

	It("reproduces ARP flux: the director and both real servers answer for the VIP", func(ctx context.Context) {
		_, stderr, code := lv("up", "--runtime", "containerlab", "--name", name, "scenarios/dr-arp-flux.yaml")
		Expect(code).To(Equal(0), stderr)
		results, stderr, code := verifyJSON(name)
		Expect(code).To(Equal(0), stderr)
		Expect(results).To(HaveLen(1))
		Expect(results[0].Passed).To(BeTrue(), results[0].Message)
		var who []string
		for _, r := range results[0].Replies {
			who = append(who, r.Node)
		}
		Expect(who).To(ConsistOf("director", "web1", "web2"))
	})

	It("gc removes a lab whose record is lost: its containers, bridge and links", func(ctx context.Context) {
		Expect(containersOf(ctx, name)).To(HaveLen(4))
		Expect(lvbridges(name)).To(HaveLen(1))
		Expect(os.Remove(filepath.Join(state.DefaultDir, name+".json"))).To(Succeed())
		_, stderr, code := lv("gc")
		Expect(code).To(Equal(0), stderr)
		Expect(namespacesOf(name)).To(BeEmpty())
		Expect(lvbridges(name)).To(BeEmpty())
		Expect(engine.Processes(engineDir)).To(BeEmpty(), "gc stops lvslab's engine once no lab needs it")
		Expect(processesNamed("webd")).To(BeEmpty(), "the lost lab's web servers went too")
	})
})

var _ = Describe("The containerlab runtime with a node that cannot start", Label("containerlab", "slow"), func() {
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
