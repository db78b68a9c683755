package e2e

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

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
		Expect(stderr).To(ContainSubstring("director: sysctl net.ipv4.conf.eth9.arp_ignore"))
		Expect(namespacesOf("broken")).To(BeEmpty())
		_, err := state.Store{Dir: state.DefaultDir}.Load("broken")
		Expect(err).To(MatchError(state.ErrNoLab))
	})

	It("cleans up with gc after lvslab up was killed", func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, cli.Bin, "up", "--name", "crashed", "scenarios/nat-rr.yaml")
		cmd.Dir = repo
		stderr, err := cmd.StderrPipe()
		Expect(err).NotTo(HaveOccurred())
		Expect(cmd.Start()).To(Succeed())
		// Kill it as soon as the topology exists, in the middle of applying.
		sc := bufio.NewScanner(stderr)
		for sc.Scan() && !strings.Contains(sc.Text(), "✓ topology") {
		}
		Expect(cmd.Process.Signal(syscall.SIGKILL)).To(Succeed())
		_ = cmd.Wait()
		Expect(namespacesOf("crashed")).NotTo(BeEmpty())

		_, stderr2, code := lv("gc")
		Expect(code).To(Equal(0), stderr2)
		Expect(namespacesOf("crashed")).To(BeEmpty())
		Expect(processesNamed("webd")).To(BeEmpty())
		_, err = state.Store{Dir: state.DefaultDir}.Load("crashed")
		Expect(err).To(MatchError(state.ErrNoLab))
	})
})
