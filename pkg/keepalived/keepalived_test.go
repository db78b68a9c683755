package keepalived

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
)

func load(t *testing.T, f string) *Config {
	t.Helper()
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(filepath.Base(f), b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Each invalid fixture names, on its first line, the error it must produce.
func TestInvalidConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/invalid/*.conf")
	if len(files) < 20 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line must be '# want: <error>'")
			}
			_, err = Parse(filepath.Base(f), b)
			if err == nil {
				t.Fatalf("Parse succeeded, want error %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error\n  got  %q\n  want %q", err, want)
			}
		})
	}
}

// Every valid fixture parses, and what Marshal writes of it parses back to
// the same Config (and is written the same way again).
func TestRoundTrip(t *testing.T) {
	files, _ := filepath.Glob("testdata/valid/*.conf")
	if len(files) < 5 {
		t.Fatalf("only %d fixtures", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c := load(t, f)
			for i, vs := range c.VirtualServers {
				if len(vs.RealServers) != len(vs.Service.Servers) {
					t.Fatalf("virtual server %d: %d real servers, %d servers", i, len(vs.RealServers), len(vs.Service.Servers))
				}
				for j, rs := range vs.RealServers {
					if rs.Server != vs.Service.Servers[j] {
						t.Errorf("virtual server %d, server %d: %+v != %+v", i, j, rs.Server, vs.Service.Servers[j])
					}
				}
			}
			out, err := Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			back, err := Parse("written", out)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !reflect.DeepEqual(back, c) {
				t.Fatalf("round trip differs\n got %+v\nwant %+v\n%s", back, c, out)
			}
			again, err := Marshal(back)
			if err != nil || string(again) != string(out) {
				t.Fatalf("written twice differently (%v)\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func ap(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestDRTCPCheck(t *testing.T) {
	c := load(t, "testdata/valid/dr-tcp-check.conf")
	if c.RouterID != "LVS_DIRECTOR1" {
		t.Errorf("router_id %q", c.RouterID)
	}
	wantVRRP := []lab.VRRPInstance{{Name: "VI_1", Interface: "eth1", RouterID: 51, State: "MASTER", Priority: 150, AdvertInt: 1,
		VIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32")}}}
	if !reflect.DeepEqual(c.VRRP, wantVRRP) {
		t.Errorf("vrrp\n got %+v\nwant %+v", c.VRRP, wantVRRP)
	}
	want := lab.Service{
		Protocol: lab.TCP, Addr: ap("203.0.113.1:80"), Scheduler: lab.WRR, Netmask: 32,
		Servers: []lab.Server{
			{Addr: ap("203.0.113.11:80"), Method: lab.DR, Weight: 3},
			{Addr: ap("203.0.113.12:80"), Method: lab.DR, Weight: 1},
		},
	}
	if len(c.VirtualServers) != 1 {
		t.Fatalf("%d virtual servers", len(c.VirtualServers))
	}
	vs := c.VirtualServers[0]
	if !reflect.DeepEqual(vs.Service, want) {
		t.Errorf("service\n got %+v\nwant %+v", vs.Service, want)
	}
	if vs.DelayLoop != 6*time.Second || vs.SorryServer != nil {
		t.Errorf("delay_loop %v, sorry_server %v", vs.DelayLoop, vs.SorryServer)
	}
	wantCheck := Check{Kind: TCPCheck, ConnectPort: 80, ConnectTimeout: 3 * time.Second, Retry: 3, DelayBeforeRetry: 3 * time.Second}
	if got := vs.RealServers[0].Check; got == nil || *got != wantCheck {
		t.Errorf("check of web1 %+v, want %+v", got, wantCheck)
	}
	wantCheck.ConnectPort = 0 // not given: the real server's port
	if got := vs.RealServers[1].Check; got == nil || *got != wantCheck {
		t.Errorf("check of web2 %+v, want %+v", got, wantCheck)
	}
}

func TestNATHTTPGet(t *testing.T) {
	c := load(t, "testdata/valid/nat-http-get.conf")
	if c.RouterID != "lvs nat" || len(c.VirtualServers) != 2 {
		t.Fatalf("router_id %q, %d virtual servers", c.RouterID, len(c.VirtualServers))
	}
	vs := c.VirtualServers[0]
	want := lab.Service{
		Protocol: lab.TCP, Addr: ap("203.0.113.1:80"), Scheduler: lab.RR, Netmask: 32,
		Servers: []lab.Server{
			{Addr: ap("198.51.100.11:80"), Method: lab.NAT, Weight: 1},
			{Addr: ap("198.51.100.12:80"), Method: lab.NAT, Weight: 1},
		},
	}
	if !reflect.DeepEqual(vs.Service, want) {
		t.Errorf("service\n got %+v\nwant %+v", vs.Service, want)
	}
	if vs.SorryServer == nil || *vs.SorryServer != ap("198.51.100.100:8080") || vs.DelayLoop != 2500*time.Millisecond {
		t.Errorf("sorry_server %v, delay_loop %v", vs.SorryServer, vs.DelayLoop)
	}
	want1 := Check{Kind: HTTPGet, Path: "/health", StatusCode: 200, ConnectPort: 80, ConnectTimeout: 2 * time.Second,
		Retry: 2, DelayBeforeRetry: 500 * time.Millisecond}
	if got := vs.RealServers[0].Check; got == nil || *got != want1 {
		t.Errorf("check %+v, want %+v", got, want1)
	}
	if got := vs.RealServers[1].Check; got == nil || got.Path != "/status page" || got.StatusCode != 0 {
		t.Errorf("check %+v, want the quoted path and no status code", got)
	}
	if udp := c.VirtualServers[1].Service; udp.Key() != "udp:203.0.113.1:53" || udp.Servers[1].Method != lab.NAT {
		t.Errorf("udp service %+v", udp)
	}
}

func TestFWMarkPersistence(t *testing.T) {
	c := load(t, "testdata/valid/fwmark-persistence.conf")
	want := []lab.Service{{
		FWMark: 10, Scheduler: lab.SH, SchedFlags: []lab.SchedFlag{lab.SHFallback, lab.SHPort},
		Persistent: true, Timeout: 600, Netmask: 24,
		Servers: []lab.Server{
			{Addr: ap("198.51.100.11:0"), Method: lab.NAT, Weight: 1},
			{Addr: ap("198.51.100.12:0"), Method: lab.NAT, Weight: 1},
		},
	}, {
		FWMark: 20, IPv6: true, Scheduler: lab.MH, SchedFlags: []lab.SchedFlag{lab.MHPort},
		Persistent: true, Timeout: 300, Netmask: 64,
		Servers: []lab.Server{{Addr: ap("[2001:db8::11]:0"), Method: lab.DR, Weight: 2}},
	}}
	var got []lab.Service
	for _, vs := range c.VirtualServers {
		got = append(got, vs.Service)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("services\n got %+v\nwant %+v", got, want)
	}
}

func TestThresholds(t *testing.T) {
	c := load(t, "testdata/valid/thresholds.conf")
	vs := c.VirtualServers[0]
	want := lab.Service{
		Protocol: lab.TCP, Addr: ap("203.0.113.1:443"), Scheduler: lab.LC, Netmask: 32,
		Servers: []lab.Server{
			{Addr: ap("203.0.113.11:443"), Method: lab.DR, Weight: 2, Upper: 100, Lower: 80},
			{Addr: ap("203.0.113.12:443"), Method: lab.DR, Weight: 0, Upper: 50},
			{Addr: ap("192.0.2.13:443"), Method: lab.Tunnel, Weight: 1, Lower: 10},
		},
	}
	if !reflect.DeepEqual(vs.Service, want) {
		t.Errorf("service\n got %+v\nwant %+v", vs.Service, want)
	}
	for i, inhibit := range []bool{true, true, false} {
		if vs.RealServers[i].InhibitOnFailure != inhibit {
			t.Errorf("real server %d: inhibit_on_failure %v", i, !inhibit)
		}
	}
	if c := vs.RealServers[0].Check; c == nil || c.ConnectTimeout != 1250*time.Millisecond || c.Retry != 5 {
		t.Errorf("check %+v", c)
	}
}

func TestTwoVRRP(t *testing.T) {
	c := load(t, "testdata/valid/two-vrrp.conf")
	want := []lab.VRRPInstance{
		{Name: "VI_WEB", Interface: "eth1", RouterID: 51, State: "BACKUP", Priority: 100, AdvertInt: 1, NoPreempt: true,
			VIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.1/32"), netip.MustParsePrefix("203.0.113.5/32")}},
		{Name: "VI_MAIL", Interface: "eth1", RouterID: 52, State: "MASTER", Priority: 200, AdvertInt: 2,
			VIPs: []netip.Prefix{netip.MustParsePrefix("203.0.113.2/24"), netip.MustParsePrefix("2001:db8::2/64")}},
	}
	if !reflect.DeepEqual(c.VRRP, want) {
		t.Errorf("vrrp\n got %+v\nwant %+v", c.VRRP, want)
	}
	svc := c.VirtualServers[0].Service
	if svc.Netmask != 128 || !svc.Persistent || svc.Timeout != 60 || svc.Servers[1].Addr != ap("[2001:db8::22]:25") {
		t.Errorf("IPv6 service %+v (a real server without a port takes the service's)", svc)
	}
}

// The defaults are keepalived's (and the kernel's scheduler).
func TestDefaults(t *testing.T) {
	c, err := Parse("k.conf", []byte("vrrp_instance V { interface eth0\nvirtual_router_id 1\nvirtual_ipaddress { 10.0.0.1 } }\n"+
		"virtual_server 10.0.0.1 80 {\nreal_server 10.0.0.2 8080\n}\n"))
	if err != nil {
		t.Fatal(err)
	}
	v := c.VRRP[0]
	if v.State != "BACKUP" || v.Priority != 100 || v.AdvertInt != 1 || v.NoPreempt {
		t.Errorf("vrrp defaults %+v", v)
	}
	svc := c.VirtualServers[0].Service
	if svc.Scheduler != lab.WLC || svc.Protocol != lab.TCP || svc.Persistent || svc.Netmask != 32 ||
		svc.Servers[0] != (lab.Server{Addr: ap("10.0.0.2:8080"), Method: lab.NAT, Weight: 1}) {
		t.Errorf("service defaults %+v", svc)
	}
}

func TestMarshalRefuses(t *testing.T) {
	svc := lab.Service{Protocol: lab.TCP, Addr: ap("10.0.0.1:80"), Scheduler: lab.RR, Netmask: 32,
		Servers: []lab.Server{{Addr: ap("10.0.0.2:80"), Method: lab.Local, Weight: 1}}}
	if _, err := Marshal(&Config{VirtualServers: []VirtualServer{NewVirtualServer(svc)}}); err == nil || !strings.Contains(err.Error(), "has no lb_kind") {
		t.Errorf("method local: %v", err)
	}
	svc.Servers[0].Method = lab.DR
	if _, err := Marshal(&Config{VirtualServers: []VirtualServer{{Service: svc}}}); err == nil || !strings.Contains(err.Error(), "NewVirtualServer") {
		t.Errorf("RealServers missing: %v", err)
	}
	if _, err := Marshal(&Config{RouterID: "a\nb"}); err == nil {
		t.Errorf("a router_id with a line break was written")
	}
}

func TestSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{"3": 3 * time.Second, "0.5": 500 * time.Millisecond, "1.000001": time.Second + time.Microsecond} {
		d, err := parseSeconds(in)
		if err != nil || d != want {
			t.Errorf("%s: %v %v", in, d, err)
		}
		if got := formatSeconds(d); got != in {
			t.Errorf("formatSeconds(%v) = %q, want %q", d, got, in)
		}
	}
	for _, in := range []string{"0", "0.0", "-1", "1.", ".5", "1.0000001", "1e3", ""} {
		if _, err := parseSeconds(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
