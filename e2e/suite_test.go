// Package e2e is lvslab's conformance suite: Ginkgo specs that bring the shipped
// scenarios up on a real kernel with IPVS (the host's, or the user-mode-linux
// sandbox that `make test` boots) and check what the kernel does.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/internal/clitest"
	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/state"
	"github.com/moby/ipvs"
	"github.com/sirupsen/logrus"
)

func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("-short runs unit tests only; the conformance suite runs on a kernel with IPVS: make e2e")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "lvslab conformance")
}

var (
	cli  clitest.CLI // the lvslab binary under test, run from the repository root
	repo string      // the repository root
)

var _ = BeforeSuite(func() {
	logrus.SetLevel(logrus.ErrorLevel) // moby/ipvs warns when its own modprobe fails; lvslab loads modules itself
	var err error
	cli, err = clitest.Default()
	Expect(err).NotTo(HaveOccurred())
	repo = cli.Dir
	Expect(os.Getuid()).To(Equal(0), "the conformance suite needs root (namespaces, IPVS)")
	Expect("/proc/thread-self/net/ip_vs").To(BeAnExistingFile(),
		"this kernel has no IPVS: run the suite through the sandbox (make e2e)")
	// A clean slate: nothing of a previous run may skew exact counts.
	_, _, code := lv("gc")
	Expect(code).To(Equal(0))
})

// lv runs the lvslab binary from the repository root.
func lv(args ...string) (string, string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := cli.Run(ctx, args...)
	if err != nil {
		Fail(fmt.Sprintf("lvslab %s: %v", strings.Join(args, " "), err))
	}
	GinkgoWriter.Println(r)
	return r.Stdout, r.Stderr, r.Code
}

// up brings a scenario up under a lab name and removes it when the container ends.
func up(file, name string) (*scenario.Scenario, *state.Lab) {
	path := file
	if !filepath.IsAbs(path) {
		path = filepath.Join(repo, file)
	}
	s, err := scenario.Load(path)
	Expect(err).NotTo(HaveOccurred())
	Expect(s.Rename(name)).To(Succeed())
	_, stderr, code := lv("up", "--name", name, file)
	Expect(code).To(Equal(0), "lvslab up %s: %s", file, stderr)
	DeferCleanup(func() {
		_, stderr, code := lv("down", name)
		Expect(code).To(Equal(0), stderr)
	})
	l, err := state.Store{Dir: state.DefaultDir}.Load(name)
	Expect(err).NotTo(HaveOccurred())
	return s, l
}

// dumpOnFailure prints the state that explains a failure: lvslab status (every
// node's addresses, the director's IPVS table), the director's connection table,
// and every node's neighbours.
func dumpOnFailure(l **state.Lab) {
	// AfterEach runs before the cleanups a spec registered, so the lab still exists.
	AfterEach(func() {
		if !CurrentSpecReport().Failed() || *l == nil {
			return
		}
		running := *l
		var b strings.Builder
		out, _, _ := lv("status", running.Name)
		b.WriteString(out)
		if running.Director != "" {
			_ = running.Handles()[running.Director].Do(func() error {
				conns, err := os.ReadFile("/proc/thread-self/net/ip_vs_conn")
				fmt.Fprintf(&b, "  %s IPVS connection table:\n%s%v\n", running.Director, conns, err)
				return nil
			})
		}
		for _, n := range running.Nodes {
			out, _ := exec.Command("ip", "-n", n.Namespace, "neigh").CombinedOutput()
			fmt.Fprintf(&b, "  %s neighbours:\n%s", n.Name, out)
		}
		AddReportEntry("lab state", b.String())
		fmt.Fprintln(GinkgoWriter, b.String())
	})
}

// kernelTable is the director's table as moby/ipvs reads it, in the kernel's
// own types: the suite's view, independent of lvslab's reader.
type kernelTable struct {
	Services []kernelService
}

type kernelService struct {
	Service      *ipvs.Service
	Destinations []*ipvs.Destination
}

// readIPVS reads the director's table over netlink with moby/ipvs.
func readIPVS(l *state.Lab) kernelTable {
	n, _ := l.Node(l.Director)
	h, err := ipvs.New(filepath.Join("/run/netns", n.Namespace))
	Expect(err).NotTo(HaveOccurred())
	defer h.Close()
	svcs, err := h.GetServices()
	Expect(err).NotTo(HaveOccurred())
	var t kernelTable
	for _, s := range svcs {
		ds, err := h.GetDestinations(s)
		Expect(err).NotTo(HaveOccurred())
		t.Services = append(t.Services, kernelService{s, ds})
	}
	return t
}

// readSpecs reads the director's services back through lvslab's reader.
func readSpecs(l *state.Lab) []lab.Service {
	t, err := apply.ReadTable(l.Handles()[l.Director])
	Expect(err).NotTo(HaveOccurred())
	return t.Specs()
}
