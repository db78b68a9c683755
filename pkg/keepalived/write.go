package keepalived

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Marshal writes c as a keepalived.conf that Parse reads back to c (for any
// c that Parse returned). It fails on what keepalived.conf cannot say: a
// real server of method local, RealServers that do not list
// Service.Servers, a value with a line break. Durations are written in
// seconds to the microsecond.
func Marshal(c *Config) ([]byte, error) {
	var b strings.Builder
	w := func(depth int, f string, a ...any) {
		b.WriteString(strings.Repeat("    ", depth))
		fmt.Fprintf(&b, f, a...)
		b.WriteByte('\n')
	}
	var err error
	val := func(s string) string {
		if strings.ContainsAny(s, "\n\r") && err == nil {
			err = fmt.Errorf("%q: a value with a line break cannot be written", s)
		}
		return quote(s)
	}
	if c.RouterID != "" {
		w(0, "global_defs {")
		w(1, "router_id %s", val(c.RouterID))
		w(0, "}")
	}
	var groups []string
	members := map[string][]string{}
	for _, v := range c.VRRP {
		if v.SyncGroup == "" {
			continue
		}
		if _, ok := members[v.SyncGroup]; !ok {
			groups = append(groups, v.SyncGroup)
		}
		members[v.SyncGroup] = append(members[v.SyncGroup], v.Name)
	}
	for _, g := range groups {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		w(0, "vrrp_sync_group %s {", val(g))
		w(1, "group {")
		for _, m := range members[g] {
			w(2, "%s", val(m))
		}
		w(1, "}")
		w(0, "}")
	}
	for _, v := range c.VRRP {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		w(0, "vrrp_instance %s {", val(v.Name))
		if v.State != "" {
			w(1, "state %s", val(v.State))
		}
		w(1, "interface %s", val(v.Interface))
		w(1, "virtual_router_id %d", v.RouterID)
		if v.Priority != 0 {
			w(1, "priority %d", v.Priority)
		}
		if v.AdvertInt != 0 {
			w(1, "advert_int %d", v.AdvertInt)
		}
		if v.NoPreempt {
			w(1, "nopreempt")
		}
		w(1, "virtual_ipaddress {")
		for _, p := range v.VIPs {
			w(2, "%s dev %s", p, val(v.Interface))
		}
		w(1, "}")
		w(0, "}")
	}
	for _, vs := range c.VirtualServers {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		if e := writeVirtualServer(w, vs); e != nil {
			return nil, fmt.Errorf("virtual_server %s: %w", vs.Service.Key(), e)
		}
	}
	if err != nil {
		return nil, err
	}
	return []byte(b.String()), nil
}

func writeVirtualServer(w func(int, string, ...any), vs VirtualServer) error {
	svc := vs.Service
	if len(vs.RealServers) != len(svc.Servers) {
		return fmt.Errorf("%d real servers beside %d servers of the service (use NewVirtualServer)", len(vs.RealServers), len(svc.Servers))
	}
	for i, rs := range vs.RealServers {
		if rs.Server != svc.Servers[i] {
			return fmt.Errorf("real server %d is %+v, the service's is %+v", i, rs.Server, svc.Servers[i])
		}
		if rs.Server.Method == lab.Local || rs.Server.Method.Kind() == "" {
			return fmt.Errorf("real server %s: method %q has no lb_kind (NAT, DR or TUN)", rs.Server.Addr, rs.Server.Method)
		}
	}
	if svc.FWMark != 0 {
		w(0, "virtual_server fwmark %d {", svc.FWMark)
	} else {
		if svc.Protocol != lab.TCP && svc.Protocol != lab.UDP {
			return errors.New("protocol is not tcp or udp")
		}
		w(0, "virtual_server %s %d {", svc.Addr.Addr(), svc.Addr.Port())
	}
	if vs.DelayLoop != 0 {
		w(1, "delay_loop %s", formatSeconds(vs.DelayLoop))
	}
	if svc.Scheduler != "" {
		w(1, "lb_algo %s", svc.Scheduler)
	}
	// lb_kind is the first real server's method; another method is the real
	// server's own lvs_method.
	method := lab.NAT
	if len(svc.Servers) > 0 {
		method = svc.Servers[0].Method
		w(1, "lb_kind %s", method.Kind())
	}
	switch {
	case svc.FWMark != 0 && svc.IPv6:
		w(1, "ip_family inet6")
	case svc.FWMark == 0:
		w(1, "protocol %s", strings.ToUpper(string(svc.Protocol)))
	}
	if svc.Persistent {
		w(1, "persistence_timeout %d", svc.Timeout)
		if svc.Netmask != 0 && svc.Netmask != svc.MaxNetmask() {
			w(1, "persistence_granularity %s", lab.NetmaskString(svc.Netmask, svc.Is6()))
		}
	}
	for _, f := range svc.SchedFlags {
		w(1, "%s", f)
	}
	if vs.SorryServer != nil {
		w(1, "sorry_server %s %d", vs.SorryServer.Addr(), vs.SorryServer.Port())
	}
	for _, rs := range vs.RealServers {
		s := rs.Server
		w(0, "")
		w(1, "real_server %s %d {", s.Addr.Addr(), s.Addr.Port())
		w(2, "weight %d", s.Weight)
		if s.Method != method {
			w(2, "lvs_method %s", s.Method.Kind())
		}
		if rs.InhibitOnFailure {
			w(2, "inhibit_on_failure")
		}
		if s.Upper != 0 {
			w(2, "uthreshold %d", s.Upper)
		}
		if s.Lower != 0 {
			w(2, "lthreshold %d", s.Lower)
		}
		if c := rs.Check; c != nil {
			if err := writeCheck(w, c); err != nil {
				return fmt.Errorf("real server %s: %w", s.Addr, err)
			}
		}
		w(1, "}")
	}
	w(0, "}")
	return nil
}

func writeCheck(w func(int, string, ...any), c *Check) error {
	if c.Kind != TCPCheck && c.Kind != HTTPGet {
		return fmt.Errorf("check kind %q is not %s or %s", c.Kind, TCPCheck, HTTPGet)
	}
	if c.Kind == HTTPGet && c.Path == "" {
		return errors.New("an HTTP_GET check needs a path")
	}
	if strings.ContainsAny(c.Path, "\n\r") {
		return fmt.Errorf("path %q: a value with a line break cannot be written", c.Path)
	}
	w(2, "%s {", c.Kind)
	if c.Kind == HTTPGet {
		w(3, "url {")
		w(4, "path %s", quote(c.Path))
		if c.StatusCode != 0 {
			w(4, "status_code %d", c.StatusCode)
		}
		w(3, "}")
	}
	if c.ConnectPort != 0 {
		w(3, "connect_port %d", c.ConnectPort)
	}
	if c.ConnectTimeout != 0 {
		w(3, "connect_timeout %s", formatSeconds(c.ConnectTimeout))
	}
	if c.Retry != 0 {
		w(3, "retry %d", c.Retry)
	}
	if c.DelayBeforeRetry != 0 {
		w(3, "delay_before_retry %s", formatSeconds(c.DelayBeforeRetry))
	}
	w(2, "}")
	return nil
}

// formatSeconds writes d in seconds, to the microsecond: "3", "1.5".
func formatSeconds(d time.Duration) string {
	s := strconv.FormatInt(int64(d/time.Second), 10)
	if us := (d % time.Second) / time.Microsecond; us != 0 {
		s += strings.TrimRight(fmt.Sprintf(".%06d", us), "0")
	}
	return s
}
