package lab

import (
	"net/netip"
	"time"
)

// Keepalived is what keepalived does on a node, from which lvslab writes its
// keepalived.conf: VRRP instances that move addresses between directors.
type Keepalived struct {
	VRRP []VRRPInstance
	// Check, when set, makes keepalived's checkers hold the node's IPVS
	// services (virtual_server blocks): each real server is health-checked,
	// taken out of the table when it fails, put back when it answers again.
	// lvslab then leaves that node's table to keepalived.
	Check *HealthCheck
}

// HealthCheckKind names a keepalived health checker.
type HealthCheckKind string

// The checkers lvslab writes.
const (
	CheckTCP     HealthCheckKind = "TCP_CHECK" // a TCP connection opens
	CheckHTTPGet HealthCheckKind = "HTTP_GET"  // a GET of Path answers StatusCode
)

// HealthCheck is the check of every real server of a node's services, with
// keepalived's timers (whole seconds).
type HealthCheck struct {
	Kind             HealthCheckKind
	Path             string // HTTP_GET
	StatusCode       int    // HTTP_GET
	DelayLoop        int    // seconds between checks of a server
	ConnectTimeout   int    // seconds
	Retry            int    // failed tries again before the server is taken out
	DelayBeforeRetry int    // seconds
	// InhibitOnFailure keeps a failed server in the table with weight 0
	// instead of removing it.
	InhibitOnFailure bool
	SorryServer      netip.AddrPort // added when every real server has failed; zero for none
}

// RemovalBound is the longest a failed server can stay in the table (or
// keep its weight): up to a delay_loop until its next check, then retry+1
// tries that may each run into connect_timeout, with delay_before_retry
// between them.
func (c HealthCheck) RemovalBound() time.Duration {
	s := c.DelayLoop + (c.Retry+1)*c.ConnectTimeout + c.Retry*c.DelayBeforeRetry
	return time.Duration(s) * time.Second
}

// ReturnBound is the longest a recovered server can stay out: up to a
// delay_loop until its next check, which then passes.
func (c HealthCheck) ReturnBound() time.Duration {
	return time.Duration(c.DelayLoop+c.ConnectTimeout) * time.Second
}

// ManagesIPVS reports whether keepalived holds the node's IPVS table.
func (k *Keepalived) ManagesIPVS() bool { return k != nil && k.Check != nil }

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
	// SyncGroup names the vrrp_sync_group the instance is in ("" for none):
	// the instances of a group change state together, so that a NAT
	// director that gives up the VIP gives up the inside gateway with it.
	SyncGroup string
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

// VRRPState is a VRRP instance's state, as keepalived names it.
type VRRPState string

// The states of a VRRP instance.
const (
	VRRPInit   VRRPState = "INIT"
	VRRPBackup VRRPState = "BACKUP"
	VRRPMaster VRRPState = "MASTER"
	VRRPFault  VRRPState = "FAULT"
)
