package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/lvslab/lvslab/pkg/node"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/vishvananda/netlink"
)

// namespacesOf lists the named namespaces of a lab.
func namespacesOf(name string) []string {
	m, _ := filepath.Glob(filepath.Join(node.NetnsDir, "clab-"+name+"-*"))
	return m
}

// rootLinks names the links of the namespace this suite runs in: lvslab must never
// add one there.
func rootLinks() []string {
	links, err := netlink.LinkList()
	Expect(err).NotTo(HaveOccurred())
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names
}

// processesNamed lists pids whose command line contains all of words.
func processesNamed(words ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		all := true
		for _, w := range words {
			all = all && strings.Contains(cmd, w)
		}
		if all {
			out = append(out, e.Name()+" "+cmd)
		}
	}
	return out
}

// stalledRun is lvslab held at a step by the LVSLAB_TEST_STALL hook.
type stalledRun struct {
	cmd    *exec.Cmd
	stderr *gbytes.Buffer
	exited chan struct{} // closed once it exited; cmd.ProcessState is set then
}

// stalled starts lvslab with args and the LVSLAB_TEST_STALL hook set to stall,
// and returns once it says it stalled there. It fails at once if lvslab exits
// before; it kills lvslab when the spec ends, should the spec not have ended it.
func stalled(stall string, args ...string) stalledRun {
	GinkgoHelper()
	r := stalledRun{cmd: exec.Command(cli.Bin, args...), stderr: gbytes.NewBuffer(), exited: make(chan struct{})}
	r.cmd.Dir = repo
	r.cmd.Env = append(os.Environ(), "LVSLAB_TEST_STALL="+stall)
	r.cmd.Stderr = io.MultiWriter(r.stderr, GinkgoWriter)
	Expect(r.cmd.Start()).To(Succeed())
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	DeferCleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.exited
	})
	Eventually(func() string {
		select {
		case <-r.exited:
			StopTrying(fmt.Sprintf("lvslab %s exited (%s) before it stalled after %q", strings.Join(args, " "), r.cmd.ProcessState, stall)).Now()
		default:
		}
		return string(r.stderr.Contents())
	}).WithTimeout(time.Minute).Should(ContainSubstring(`stalled after "` + stall))
	return r
}

// output is what lvslab has written to stderr so far.
func (r stalledRun) output() string { return string(r.stderr.Contents()) }

// end sends sig and waits until lvslab exits.
func (r stalledRun) end(sig syscall.Signal) *os.ProcessState {
	GinkgoHelper()
	Expect(r.cmd.Process.Signal(sig)).To(Succeed())
	Eventually(r.exited).WithTimeout(time.Minute).Should(BeClosed())
	return r.cmd.ProcessState
}

// namespaceInodes identifies a lab's namespaces by inode, which outlives their names.
func namespaceInodes(name string) []uint64 {
	var out []uint64
	for _, p := range namespacesOf(name) {
		var st syscall.Stat_t
		Expect(syscall.Stat(p, &st)).To(Succeed())
		out = append(out, st.Ino)
	}
	return out
}

// processesIn lists the processes whose network namespace is one of inodes.
func processesIn(inodes []uint64) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", e.Name(), "ns", "net"), &st) != nil {
			continue
		}
		if slices.Contains(inodes, st.Ino) {
			b, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			out = append(out, e.Name()+" "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

// addressesOf lists the addresses of dev in a lab's node, read over netlink.
func addressesOf(l *state.Lab, nodeName, dev string) []string {
	h, err := l.Handles()[nodeName].Netlink()
	Expect(err).NotTo(HaveOccurred())
	defer h.Close()
	link, err := h.LinkByName(dev)
	Expect(err).NotTo(HaveOccurred())
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, a := range addrs {
		out = append(out, a.IPNet.String())
	}
	return out
}

var _ = Describe("Lab lifecycle", Label("nat", "lifecycle"), func() {
	It("down leaves no namespace, link, process or record behind, and is safe to repeat", func() {
		linksBefore := rootLinks()
		_, stderr, code := lv("up", "--name", "gone", "scenarios/nat-rr.yaml")
		Expect(code).To(Equal(0), stderr)
		l, err := state.Store{Dir: state.DefaultDir}.Load("gone")
		Expect(err).NotTo(HaveOccurred())
		Expect(l.Processes).NotTo(BeEmpty())
		Expect(namespacesOf("gone")).To(HaveLen(5))
		Expect(rootLinks()).To(Equal(linksBefore), "nothing may be created in the caller's namespace")

		// Something started by hand in a node must go too.
		_, _, code = lv("exec", "--lab", "gone", "web1", "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 &")
		Expect(code).To(Equal(0))
		Expect(processesNamed("sleep", "600")).To(HaveLen(1))

		_, stderr, code = lv("down", "gone")
		Expect(code).To(Equal(0), stderr)
		Expect(namespacesOf("gone")).To(BeEmpty())
		for _, p := range l.Processes {
			// Killed and waited for by down; a zombie until init reaps it.
			Expect(p.Exited()).To(BeTrue(), "%s (pid %d) still runs", p.Role, p.Pid)
			Eventually(p.Alive).WithTimeout(5*time.Second).Should(BeFalse(), "%s (pid %d) is never reaped", p.Role, p.Pid)
		}
		Expect(processesNamed("sleep", "600")).To(BeEmpty())
		Expect(rootLinks()).To(Equal(linksBefore))
		_, err = state.Store{Dir: state.DefaultDir}.Load("gone")
		Expect(err).To(MatchError(state.ErrNoLab))

		_, stderr, code = lv("down", "gone")
		Expect(code).To(Equal(0), "a second down is not an error: %s", stderr)
	})

	It("runs two labs of one scenario side by side", func(ctx context.Context) {
		_, a := up("scenarios/nat-rr.yaml", "side-a")
		_, b := up("scenarios/nat-rr.yaml", "side-b")
		for _, l := range []*state.Lab{a, b} {
			got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 4)
			Expect(got.Errors).To(BeEmpty(), "lab %s", l.Name)
			Expect(got.Counts).To(Equal(map[string]int{"web1": 2, "web2": 2}), "lab %s", l.Name)
		}
		_, _, code := lv("exec", "client", "--", "true")
		Expect(code).NotTo(Equal(0), "a node name in two labs needs --lab")
		_, _, code = lv("exec", "--lab", "side-b", "client", "--", "true")
		Expect(code).To(Equal(0))
		_, _, code = lv("up", "--name", "side-a", "scenarios/nat-rr.yaml")
		Expect(code).To(Equal(1), "a lab that is up cannot be brought up again")
	})

	It("refuses a bad scenario before building anything", func() {
		_, stderr, code := lv("up", "pkg/scenario/testdata/invalid/unknown-scheduler.yaml")
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring(`unknown-scheduler.yaml: nodes.director.ipvs.services[0].scheduler: "roundrobin" is not a scheduler the kernel ships`))
		Expect(namespacesOf("lvs-nat")).To(BeEmpty())
	})

	It("removes everything it built when a step fails", func() {
		_, stderr, code := lv("up", "e2e/testdata/broken-apply.yaml")
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring("✓ topology"), "the failing step comes after the topology was built")
		Expect(stderr).To(ContainSubstring("director: sysctl net.ipv4.conf.eth9.arp_ignore"))
		Expect(namespacesOf("broken")).To(BeEmpty())
		_, err := state.Store{Dir: state.DefaultDir}.Load("broken")
		Expect(err).To(MatchError(state.ErrNoLab))
	})

	// kill -9 cannot roll anything back: the record, written before anything
	// was made, names what is left, and gc removes it (README, Topologies).
	// LVSLAB_TEST_STALL holds up at a known step, so the kill lands there.
	DescribeTable("cleans up with gc after lvslab up was killed mid-way",
		func(stall, done, notYet string, partial func(*state.Lab)) {
			DeferCleanup(func() { lv("down", "crashed") }) // only if the spec fails before gc
			run := stalled(stall, "up", "--name", "crashed", "scenarios/nat-rr.yaml")
			Expect(run.output()).To(ContainSubstring(done))
			Expect(run.output()).NotTo(ContainSubstring(notYet))
			Expect(run.output()).NotTo(ContainSubstring("is up"))
			l, err := state.Store{Dir: state.DefaultDir}.Load("crashed")
			Expect(err).NotTo(HaveOccurred(), "the lab is recorded before anything is made")
			Expect(l.Applied).To(BeEmpty(), "up had not finished")
			Expect(namespacesOf("crashed")).To(HaveLen(5))
			partial(l)
			inodes := namespaceInodes("crashed")
			// Something started by hand in a node, never recorded, must go too.
			_, _, code := lv("exec", "--lab", "crashed", "web1", "--", "sh", "-c", "sleep 601 >/dev/null 2>&1 &")
			Expect(code).To(Equal(0))
			Expect(processesIn(inodes)).To(HaveLen(1))

			ps := run.end(syscall.SIGKILL)
			ws := ps.Sys().(syscall.WaitStatus)
			Expect(ws.Signaled() && ws.Signal() == syscall.SIGKILL).To(BeTrue(), "lvslab up ended by itself (%s) before the kill", ps)
			Expect(run.output()).NotTo(ContainSubstring(notYet), "nothing ran after the stall")
			Expect(namespacesOf("crashed")).To(HaveLen(5), "kill -9 leaves the half-built lab")
			_, err = state.Store{Dir: state.DefaultDir}.Load("crashed")
			Expect(err).NotTo(HaveOccurred(), "kill -9 leaves the record")

			_, stderr, code := lv("gc")
			Expect(code).To(Equal(0), stderr)
			Expect(stderr).To(ContainSubstring("✓ lab crashed removed"))
			Expect(namespacesOf("crashed")).To(BeEmpty())
			Eventually(func() []string { return processesIn(inodes) }).WithTimeout(5 * time.Second).Should(BeEmpty())
			Expect(processesNamed("sleep", "601")).To(BeEmpty())
			Expect(processesNamed("webd")).To(BeEmpty())
			_, err = state.Store{Dir: state.DefaultDir}.Load("crashed")
			Expect(err).To(MatchError(state.ErrNoLab))
		},
		Entry("once the topology exists: namespaces, no address, no IPVS service", "topology",
			"✓ topology", "✓ apply", func(l *state.Lab) {
				Expect(readIPVS(l).Services).To(BeEmpty())
				Expect(addressesOf(l, "director", "eth1")).To(BeEmpty())
			}),
		Entry("once the kernel state is applied: IPVS programmed, no web server yet", "apply",
			"✓ apply (read back from the kernel)", "✓ web servers answering", func(l *state.Lab) {
				t := readIPVS(l)
				Expect(t.Services).To(HaveLen(1))
				Expect(t.Services[0].Destinations).To(HaveLen(2))
				Expect(addressesOf(l, "director", "eth1")).To(ContainElement("203.0.113.1/24"))
				Expect(processesIn(namespaceInodes("crashed"))).To(BeEmpty(), "no web server started yet")
				Expect(l.Processes).To(BeEmpty())
			}),
	)

	// Ctrl-C during apply puts back the scenario applied before (README,
	// Interrupting a command): stalled once the edit is made in the kernel.
	It("rolls an apply interrupted mid-way back to the scenario applied before", func(ctx context.Context) {
		s, l := up("scenarios/nat-rr.yaml", "rollback")
		Expect(kernelWeights(s, l)).To(Equal(map[string]int{"web1": 1, "web2": 1}))
		applied := l.Applied
		Expect(applied).NotTo(BeEmpty())

		run := stalled("apply", "apply", "--name", "rollback", variant("scenarios/nat-rr.yaml", weight("web2", 3)))
		Expect(run.output()).To(ContainSubstring("✓ apply (1 changes)"))
		Expect(kernelWeights(s, l)).To(Equal(map[string]int{"web1": 1, "web2": 3}), "the edit is in the kernel when apply is interrupted")

		Expect(run.end(syscall.SIGINT).ExitCode()).To(Equal(1))
		Expect(run.output()).To(ContainSubstring("interrupted; rolled back to the scenario applied before (1 changes undone)"))
		Expect(run.output()).NotTo(ContainSubstring("matches"))

		Expect(kernelWeights(s, l)).To(Equal(map[string]int{"web1": 1, "web2": 1}), "the kernel is back at the scenario applied before")
		after, err := state.Store{Dir: state.DefaultDir}.Load("rollback")
		Expect(err).NotTo(HaveOccurred())
		Expect(after.Applied).To(Equal(applied), "the record still names the scenario applied before")
		got := verify.HTTPClient{From: l.Handles()["client"]}.Get(ctx, "http://203.0.113.1/", 4)
		Expect(got.Errors).To(BeEmpty())
		Expect(got.Counts).To(Equal(map[string]int{"web1": 2, "web2": 2}))
	})
})
