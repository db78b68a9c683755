package lab

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Keepalived is what keepalived does on a node, from which lvslab writes its
// keepalived.conf: VRRP instances that move addresses between directors.
type Keepalived struct {
	VRRP []VRRPInstance
}

// VRRPInstance is one vrrp_instance block (VRRP version 2, keepalived's default).
type VRRPInstance struct {
	Name      string // VI_1
	Interface string
	RouterID  int    // virtual_router_id, 1..255
	State     string // MASTER or BACKUP: the state it starts in
	Priority  int    // 1..254
	AdvertInt int    // seconds between adverts (advert_int), 1..255
	NoPreempt bool   // a higher priority does not take the addresses back
	VIPs      []netip.Prefix
}

// Skew is VRRPv2's skew time: (256 − priority) / 256 s (RFC 3768 6.1;
// keepalived's VRRP_TIMER_SKEW for version 2).
func (v VRRPInstance) Skew() time.Duration {
	return time.Duration(256-v.Priority) * time.Second / 256
}

// MasterDown is how long a backup waits without hearing the master before it
// takes over: 3 × advert_int + skew (RFC 3768 6.1, Master_Down_Interval).
func (v VRRPInstance) MasterDown() time.Duration {
	return 3*time.Duration(v.AdvertInt)*time.Second + v.Skew()
}

// Config is the keepalived.conf of a node named router.
func (k Keepalived) Config(router string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by lvslab for node %s\nglobal_defs {\n    router_id %s\n}\n", router, router)
	for _, v := range k.VRRP {
		fmt.Fprintf(&b, "\nvrrp_instance %s {\n    state %s\n    interface %s\n    virtual_router_id %d\n    priority %d\n    advert_int %d\n",
			v.Name, v.State, v.Interface, v.RouterID, v.Priority, v.AdvertInt)
		if v.NoPreempt {
			b.WriteString("    nopreempt\n")
		}
		b.WriteString("    virtual_ipaddress {\n")
		for _, p := range v.VIPs {
			fmt.Fprintf(&b, "        %s dev %s\n", p, v.Interface)
		}
		b.WriteString("    }\n}\n")
	}
	return b.String()
}
