package lab

import (
	"net/netip"
	"testing"
	"time"
)

// VRRPv2's timers (RFC 3768 6.1): skew (256 − priority)/256 s, and a backup
// takes over after 3 × advert_int + skew.
func TestVRRPTimers(t *testing.T) {
	for _, c := range []struct {
		prio, advert int
		skew, down   time.Duration
	}{
		{100, 1, 609375 * time.Microsecond, 3609375 * time.Microsecond},
		{150, 1, 414062500, 3414062500},
		{254, 2, 7812500, 6007812500},
	} {
		v := VRRPInstance{Priority: c.prio, AdvertInt: c.advert}
		if v.Skew() != c.skew || v.MasterDown() != c.down {
			t.Errorf("priority %d, advert_int %d: skew %v, master down %v; want %v, %v", c.prio, c.advert, v.Skew(), v.MasterDown(), c.skew, c.down)
		}
	}
}

func TestKeepalivedConfig(t *testing.T) {
	k := Keepalived{VRRP: []VRRPInstance{{Name: "VI_1", Interface: "eth1", RouterID: 51, State: "BACKUP", Priority: 100,
		AdvertInt: 1, NoPreempt: true, VIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32")}}}}
	want := `# written by lvslab for node director2
global_defs {
    router_id director2
}

vrrp_instance VI_1 {
    state BACKUP
    interface eth1
    virtual_router_id 51
    priority 100
    advert_int 1
    nopreempt
    virtual_ipaddress {
        203.0.113.1/32 dev eth1
    }
}
`
	if got := k.Config("director2"); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}
