package apply

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/moby/ipvs"
)

// fakeIPVS keeps a table the way the kernel does (real servers in reverse order of
// insertion, the hashed flag on every listed service) and counts writes.
type fakeIPVS struct {
	svcs   []*ipvs.Service
	dests  map[string][]*ipvs.Destination
	writes []string
}

func newFake() *fakeIPVS { return &fakeIPVS{dests: map[string][]*ipvs.Destination{}} }

func (f *fakeIPVS) GetServices() ([]*ipvs.Service, error) {
	var out []*ipvs.Service
	for _, s := range f.svcs {
		c := *s
		c.Flags |= FlagHashed
		out = append(out, &c)
	}
	return out, nil
}

func (f *fakeIPVS) find(s *ipvs.Service) int {
	return slices.IndexFunc(f.svcs, func(x *ipvs.Service) bool { return kernelServiceKey(x) == kernelServiceKey(s) })
}

func (f *fakeIPVS) NewService(s *ipvs.Service) error {
	if f.find(s) >= 0 {
		return fmt.Errorf("file exists")
	}
	c := *s
	f.svcs = append(f.svcs, &c)
	f.writes = append(f.writes, "NewService "+kernelServiceKey(s))
	return nil
}

func (f *fakeIPVS) UpdateService(s *ipvs.Service) error {
	i := f.find(s)
	if i < 0 {
		return fmt.Errorf("no such service")
	}
	c := *s
	f.svcs[i] = &c
	f.writes = append(f.writes, "UpdateService "+kernelServiceKey(s)+" "+s.SchedName)
	return nil
}

func (f *fakeIPVS) DelService(s *ipvs.Service) error {
	i := f.find(s)
	if i < 0 {
		return fmt.Errorf("no such service")
	}
	f.svcs = slices.Delete(f.svcs, i, i+1)
	delete(f.dests, kernelServiceKey(s))
	f.writes = append(f.writes, "DelService "+kernelServiceKey(s))
	return nil
}

func (f *fakeIPVS) GetDestinations(s *ipvs.Service) ([]*ipvs.Destination, error) {
	return slices.Clone(f.dests[kernelServiceKey(s)]), nil
}

func (f *fakeIPVS) NewDestination(s *ipvs.Service, d *ipvs.Destination) error {
	k := kernelServiceKey(s)
	c := *d
	f.dests[k] = append([]*ipvs.Destination{&c}, f.dests[k]...) // the kernel adds at the head
	f.writes = append(f.writes, "NewDestination "+kernelDestKey(d))
	return nil
}

func (f *fakeIPVS) UpdateDestination(s *ipvs.Service, d *ipvs.Destination) error {
	k := kernelServiceKey(s)
	for i, x := range f.dests[k] {
		if kernelDestKey(x) == kernelDestKey(d) {
			c := *d
			f.dests[k][i] = &c
			f.writes = append(f.writes, fmt.Sprintf("UpdateDestination %s weight %d", kernelDestKey(d), d.Weight))
			return nil
		}
	}
	return fmt.Errorf("no such destination")
}

func (f *fakeIPVS) DelDestination(s *ipvs.Service, d *ipvs.Destination) error {
	k := kernelServiceKey(s)
	f.dests[k] = slices.DeleteFunc(f.dests[k], func(x *ipvs.Destination) bool { return kernelDestKey(x) == kernelDestKey(d) })
	f.writes = append(f.writes, "DelDestination "+kernelDestKey(d))
	return nil
}

func natRR() []lab.Service {
	return []lab.Service{{
		Protocol: "tcp", Addr: netip.MustParseAddrPort("203.0.113.1:80"), Scheduler: "rr",
		Servers: []lab.Server{
			{Addr: netip.MustParseAddrPort("198.51.100.11:80"), Method: lab.NAT, Weight: 1},
			{Addr: netip.MustParseAddrPort("198.51.100.12:80"), Method: lab.NAT, Weight: 1},
		},
	}}
}

func TestReconcileFromEmpty(t *testing.T) {
	f := newFake()
	ch, err := ReconcileIPVS("director", f, natRR())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"NewService tcp:203.0.113.1:80", "NewDestination 198.51.100.11:80", "NewDestination 198.51.100.12:80"}
	if !slices.Equal(f.writes, want) {
		t.Fatalf("writes %q, want %q", f.writes, want)
	}
	if len(ch) != 3 {
		t.Errorf("changes %v", ch)
	}
	d := f.dests["tcp:203.0.113.1:80"]
	if methodOf(d[0].ConnectionFlags) != lab.NAT || d[0].Weight != 1 {
		t.Errorf("destination %+v", d[0])
	}
}

func TestReconcileTwiceWritesNothing(t *testing.T) {
	f := newFake()
	if _, err := ReconcileIPVS("director", f, natRR()); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	ch, err := ReconcileIPVS("director", f, natRR())
	if err != nil {
		t.Fatal(err)
	}
	if len(f.writes) != 0 || len(ch) != 0 {
		t.Fatalf("second apply wrote %q (changes %v), want nothing", f.writes, ch)
	}
}

func TestReconcileWeightEditsOneServer(t *testing.T) {
	f := newFake()
	if _, err := ReconcileIPVS("director", f, natRR()); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	want := natRR()
	want[0].Servers[1].Weight = 3
	if _, err := ReconcileIPVS("director", f, want); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.writes, []string{"UpdateDestination 198.51.100.12:80 weight 3"}) {
		t.Fatalf("writes %q, want one edit of 198.51.100.12:80", f.writes)
	}
}

func TestReconcileSchedulerAndRemovals(t *testing.T) {
	f := newFake()
	extra := append(natRR(), lab.Service{Protocol: "udp", Addr: netip.MustParseAddrPort("203.0.113.1:53"), Scheduler: "rr"})
	if _, err := ReconcileIPVS("director", f, extra); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	want := natRR()
	want[0].Scheduler = "wrr"
	want[0].Servers = want[0].Servers[:1]
	if _, err := ReconcileIPVS("director", f, want); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(f.writes, "; ")
	if got != "UpdateService tcp:203.0.113.1:80 wrr; DelDestination 198.51.100.12:80; DelService udp:203.0.113.1:53" {
		t.Fatalf("writes %s", got)
	}
}

// Re-creating a service deletes it and adds it again with its real servers in
// the scenario's order, and leaves the table as it was declared.
func TestRecreateService(t *testing.T) {
	f := newFake()
	if _, err := ReconcileIPVS("director", f, natRR()); err != nil {
		t.Fatal(err)
	}
	f.writes = nil
	if err := RecreateService(f, natRR()[0]); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(f.writes, "; ")
	want := "DelService tcp:203.0.113.1:80; NewService tcp:203.0.113.1:80; NewDestination 198.51.100.11:80; NewDestination 198.51.100.12:80"
	if got != want {
		t.Fatalf("writes %s, want %s", got, want)
	}
	if changes, err := DiffIPVS("director", f, natRR()); err != nil || len(changes) != 0 {
		t.Fatalf("after re-creating: changes %v, %v", changes, err)
	}
	if err := RecreateService(f, lab.Service{Protocol: "tcp", Addr: netip.MustParseAddrPort("203.0.113.9:80"), Scheduler: "rr"}); err == nil || !strings.Contains(err.Error(), "re-create tcp:203.0.113.9:80: delete") {
		t.Fatalf("a service that is not there: %v", err)
	}
}
