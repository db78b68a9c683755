package lab

import (
	"slices"
	"testing"
)

func TestValidSysctlKey(t *testing.T) {
	for _, k := range []string{"net.ipv4.ip_forward", "net.ipv4.conf.eth1.arp_ignore", "net.ipv4.vs.conntrack"} {
		if err := ValidSysctlKey(k); err != nil {
			t.Errorf("%s: %v", k, err)
		}
	}
	for _, k := range []string{"kernel.panic", "vm.swappiness", "net..x", "net.ipv4/../../kernel", "net", "net."} {
		if ValidSysctlKey(k) == nil {
			t.Errorf("%s accepted", k)
		}
	}
	if p := (Sysctl{Key: "net.ipv4.conf.all.arp_ignore"}).Path(); p != "/proc/sys/net/ipv4/conf/all/arp_ignore" {
		t.Errorf("path %s", p)
	}
}

func TestSchedulerRegistry(t *testing.T) {
	if len(Schedulers()) != 13 {
		t.Fatalf("schedulers %v", Schedulers())
	}
	if s, err := ParseScheduler("sh"); err != nil || s != SH || !s.HasFlag(SHPort) || s.HasFlag(MHPort) {
		t.Errorf("sh: %v %v", s, err)
	}
	if _, err := ParseScheduler("roundrobin"); err == nil {
		t.Error("roundrobin accepted")
	}
	mods := KernelModules()
	for _, s := range Schedulers() {
		if !slices.Contains(mods, s.Module()) {
			t.Errorf("%s missing from %v", s.Module(), mods)
		}
	}
	spec := Spec{Nodes: []NodeSpec{{Name: "d", Services: []Service{{Scheduler: WRR}, {Scheduler: WRR}}, Marks: []Mark{{Mark: 1}}}}}
	if got := spec.Modules(); !slices.Equal(got, append([]string{"ip_vs", "ip_vs_wrr"}, MarkModules()...)) {
		t.Errorf("modules %v", got)
	}
}

func TestNetmask(t *testing.T) {
	if b, err := ParseNetmask("255.255.255.0", false); err != nil || b != 24 || NetmaskString(b, false) != "255.255.255.0" {
		t.Errorf("%d %v", b, err)
	}
	for _, bad := range []string{"255.0.255.0", "0.0.0.0", "x"} {
		if _, err := ParseNetmask(bad, false); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if b, err := ParseNetmask("64", true); err != nil || b != 64 || NetmaskString(b, true) != "64" {
		t.Errorf("%d %v", b, err)
	}
}
