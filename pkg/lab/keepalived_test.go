package lab

import (
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
