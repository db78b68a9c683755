package ipvsadm

import (
	"bytes"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The seed lab's rules, one per option of its ipvsadm table.
var seedRules = []string{
	"-A -t 203.0.113.1:80 -s rr",
	"-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m",
	"-a -t 203.0.113.1:80 -r 198.51.100.12 -m -w 2",
	"-A -u 203.0.113.1:53 -s wrr",
	"-a -u 203.0.113.1:53 -r 198.51.100.11:53 -g -w 3 -x 100 -y 10",
	"-a -u 203.0.113.1:53 -r 198.51.100.12:53 -i -w 0",
	"-A -t 203.0.113.2:80 -s rr -p 120",
	"-A -t 203.0.113.2:0 -s rr -p 120",
	"-A -f 10 -s rr -p 60",
	"-a -f 10 -r 198.51.100.11 -g",
	"-A -t 203.0.113.3:80 -s sh -b sh-port,sh-fallback",
	"-A -t 203.0.113.4:80 -s mh -b mh-port",
	"-A -t 203.0.113.5:80 -s wlc -p -M 255.255.255.0",
	"-A -t [2001:db8::1]:80 -s rr -p 30 -M 64",
	"-a -t [2001:db8::1]:80 -r [2001:db8:1::11]:8080 -m",
	"-A -f 11 -6 -s dh",
	"-E -t 203.0.113.1:80 -s wrr",
	"-e -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 5",
	"-d -t 203.0.113.1:80 -r 198.51.100.12:80",
	"-D -t 203.0.113.4:80",
}

func TestSeedRules(t *testing.T) {
	svcs, err := Build(seedRules)
	if err != nil {
		t.Fatal(err)
	}
	var save bytes.Buffer
	if err := WriteRules(&save, svcs); err != nil {
		t.Fatal(err)
	}
	want := `-A -t 203.0.113.1:80 -s wrr
-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 5
-A -u 203.0.113.1:53 -s wrr
-a -u 203.0.113.1:53 -r 198.51.100.11:53 -g -w 3 -x 100 -y 10
-a -u 203.0.113.1:53 -r 198.51.100.12:53 -i -w 0 --tun-type ipip
-A -t 203.0.113.2:80 -s rr -p 120
-A -t 203.0.113.2:0 -s rr -p 120
-A -f 10 -s rr -p 60
-a -f 10 -r 198.51.100.11:0 -g -w 1
-A -t 203.0.113.3:80 -s sh -b sh-fallback,sh-port
-A -t 203.0.113.5:80 -s wlc -p 300 -M 255.255.255.0
-A -t [2001:db8::1]:80 -s rr -p 30 -M 64
-a -t [2001:db8::1]:80 -r [2001:db8:1::11]:8080 -m -w 1
-A -f 11 -6 -s dh
`
	if save.String() != want {
		t.Errorf("ipvsadm-save:\n%s\nwant:\n%s", save.String(), want)
	}
	// Round trip: what is printed parses back to the same model.
	again, err := Build(strings.Split(strings.TrimSpace(save.String()), "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, svcs) {
		t.Errorf("round trip differs:\n got %+v\nwant %+v", again, svcs)
	}
}

func TestParseDefaults(t *testing.T) {
	r, err := ParseRule("ipvsadm -A -t 203.0.113.1:80")
	if err != nil {
		t.Fatal(err)
	}
	if r.Service.Scheduler != "wlc" || r.Service.Persistent || r.Service.Netmask != 32 {
		t.Errorf("defaults %+v: want wlc, not persistent, netmask /32", r.Service)
	}
	r, err = ParseRule("-a -t 203.0.113.1:80 -r 198.51.100.11")
	if err != nil {
		t.Fatal(err)
	}
	if r.Server.Method != lab.DR || r.Server.Weight != 1 || r.Server.Addr.Port() != 80 {
		t.Errorf("server defaults %+v: want -g, weight 1, the service's port", r.Server)
	}
	r, err = ParseRule("--add-service --tcp-service=203.0.113.1:80 --scheduler sh --persistent 60")
	if err != nil {
		t.Fatal(err)
	}
	if r.Service.Scheduler != "sh" || r.Service.Timeout != 60 {
		t.Errorf("long options: %+v", r.Service)
	}
}

func TestRuleErrors(t *testing.T) {
	for _, c := range []struct{ rule, want string }{
		{"-A -t 203.0.113.1:80 -s roundrobin", `-s: "roundrobin" is not a scheduler the kernel ships`},
		{"-A -t 203.0.113.300:80", `-t: "203.0.113.300:80": not an address`},
		{"-A -t 203.0.113.1:70000", `-t: "203.0.113.1:70000": port "70000" is out of range (0..65535)`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -w 65536", `-w: "65536" is out of range (0..65535)`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -w -1", `-w: needs a value`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -x 10 -y 20", `-y: lower threshold 20 is above the upper threshold 10`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -m -g", `-g: a second forwarding method (already -m)`},
		{"-a -t 203.0.113.1:80 -r 2001:db8::1", `-r: "2001:db8::1" is not of the service's address family`},
		{"-A -t 203.0.113.1:80 -s rr -M 255.255.255.0", `-M: needs -p`},
		{"-A -t 203.0.113.1:80 -s rr -p 60 -M 255.0.255.0", `-M: "255.0.255.0": not a contiguous netmask`},
		{"-A -t 203.0.113.1:80 -s rr -b sh-port", `-b: "sh-port" is not a flag of scheduler rr`},
		{"-A -t 203.0.113.1:80 -s rr -w 3", `-w: is an option of -a/-e, not of -A`},
		{"-A -f 0 -s rr", `-f: "0" is not a firewall mark`},
		{"-A -t 203.0.113.1:80 -6", `-6: only for firewall-mark services`},
		{"-t 203.0.113.1:80 -s rr", `no command`},
		{"-A -s rr", `no service`},
		{"-a -t 203.0.113.1:80", `-r: missing`},
		{"-A -t 203.0.113.1:80 --persistent-conn", `--persistent-conn: unknown or unsupported option`},
		{"-A -t 203.0.113.1:80 -s", `-s: needs a value`},
		{"-C -t 203.0.113.1:80", `-C: takes no other option`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -i --tun-type gue", `--tun-type: "gue": only ipip`},
		{"-a -t 203.0.113.1:80 -r 198.51.100.11 -m --tun-type ipip", `--tun-type: needs -i`},
		{"-A -t 203.0.113.1:80 --tun-type ipip", `--tun-type: is an option of -a/-e, not of -A`},
	} {
		_, err := ParseRule(c.rule)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.rule, err, c.want)
		}
	}
}

func TestBuildErrorsNameTheLine(t *testing.T) {
	for _, c := range []struct {
		rules []string
		want  string
	}{
		{[]string{"-A -t 203.0.113.1:80", "-A -t 203.0.113.1:80 -s rr"}, `rule 2 "-A -t 203.0.113.1:80 -s rr": -A: service tcp:203.0.113.1:80 exists already`},
		{[]string{"-a -t 203.0.113.1:80 -r 198.51.100.11"}, `rule 1 "-a -t 203.0.113.1:80 -r 198.51.100.11": -a: no service tcp:203.0.113.1:80`},
		{[]string{"-A -t 203.0.113.1:80", "-a -t 203.0.113.1:80 -r 198.51.100.11", "-a -t 203.0.113.1:80 -r 198.51.100.11:80"}, `rule 3`},
		{[]string{"-A -t 203.0.113.1:80", "-e -t 203.0.113.1:80 -r 198.51.100.11"}, `-e: no real server 198.51.100.11:80`},
		{[]string{"-D -t 203.0.113.1:80"}, `-D: no service tcp:203.0.113.1:80`},
	} {
		_, err := Build(c.rules)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.rules, err, c.want)
		}
	}
	svcs, err := Build([]string{"-A -t 203.0.113.1:80", "-C", "-A -u 203.0.113.1:53"})
	if err != nil || len(svcs) != 1 || svcs[0].Protocol != "udp" {
		t.Errorf("-C then -A: %+v %v", svcs, err)
	}
}

// FuzzRule checks properties of ParseRule and Exec on any line:
//   - a line either fails to parse or parses to a rule;
//   - a rule that parses runs on a table that holds what it names (a -A of its
//     service first, and a -a of its real server for -e and -d), and a -A of the
//     service as ServiceArg names it parses too;
//   - a real server of -a or -e has a weight in 0..65535 and, when it has an upper
//     threshold, a lower one not above it;
//   - the table, printed with WriteRules and run again as rules, gives the same
//     services (round trip).
func FuzzRule(f *testing.F) {
	for _, r := range seedRules {
		f.Add(r)
	}
	for _, r := range []string{
		"-A -t [::1]:0 -s sh -b sh-port -p",
		"--add-server --fwmark-service 7 --real-server 1.2.3.4 --ipip --weight 9",
		"-a -t 203.0.113.1:80 -r 198.51.100.11:8080 -m -w 0 -x 4294967295 -y 4294967295",
		"-a -t 203.0.113.1:80 -r 198.51.100.11 -g -x 5",
		"-a -t 203.0.113.1:80 -r 198.51.100.11 -i -y 5",
		"-a -u [2001:db8::1]:53 -r [2001:db8:1::11] -i -w 65535 -x 1 -y 1",
		"-a -f 10 -6 -r [2001:db8:1::11]:0 -g -w 2",
		"-e -t 203.0.113.1:80 -r 198.51.100.11:80 -g -w 7 -x 100 -y 50",
		"-e -f 10 -r 198.51.100.11 -i -x 3",
		"-e -u 203.0.113.1:53 -r 198.51.100.12:53 -m -y 9",
		"--edit-server --udp-service 203.0.113.1:53 --real-server 198.51.100.12 --masquerading --u-threshold 10 --l-threshold 2",
		"--add-server --tcp-service=203.0.113.1:80 --real-server=198.51.100.11 --gatewaying --weight=4 --u-threshold=8 --l-threshold=8",
		"-d -u 203.0.113.1:53 -r 198.51.100.12",
		"-E -f 10 -s sh -b sh-fallback -p 10",
		"-C",
	} {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseRule(line)
		if err != nil {
			return
		}
		if r.Op == AddServer || r.Op == EditServer {
			if r.Server.Weight < 0 || r.Server.Weight > 65535 {
				t.Fatalf("%q: weight %d", line, r.Server.Weight)
			}
			if r.Server.Upper != 0 && r.Server.Lower > r.Server.Upper {
				t.Fatalf("%q: lower threshold %d above upper %d", line, r.Server.Lower, r.Server.Upper)
			}
		}
		// What the rule names must exist before it runs.
		var setup []string
		switch r.Op {
		case EditService, DelService, AddServer:
			setup = []string{"-A " + ServiceArg(r.Service)}
		case EditServer, DelServer:
			setup = []string{"-A " + ServiceArg(r.Service), "-a " + ServiceArg(r.Service) + " -r " + r.Server.Addr.String()}
		}
		var table Rules
		for _, s := range setup {
			sr, err := ParseRule(s)
			if err != nil {
				t.Fatalf("%q: setup %q does not parse: %v", line, s, err)
			}
			if err := table.Exec(sr); err != nil {
				t.Fatalf("%q: setup %q: %v", line, s, err)
			}
		}
		if err := table.Exec(r); err != nil {
			t.Fatalf("exec %q: %v", line, err)
		}
		var b bytes.Buffer
		if err := WriteRules(&b, table); err != nil {
			t.Fatal(err)
		}
		var again []lab.Service
		if saved := strings.TrimSpace(b.String()); saved != "" {
			again, err = Build(strings.Split(saved, "\n"))
			if err != nil {
				t.Fatalf("%q printed as %q, which does not parse: %v", line, b.String(), err)
			}
		}
		if !reflect.DeepEqual(withoutEmpty(table), withoutEmpty(again)) {
			t.Fatalf("%q: round trip through\n%s\n got %+v\nwant %+v", line, b.String(), again, table)
		}
	})
}

// withoutEmpty returns a copy of services in which empty server and flag lists are
// nil, so that a list emptied by -d equals one never filled.
func withoutEmpty(services []lab.Service) []lab.Service {
	var out []lab.Service
	for _, s := range services {
		if len(s.Servers) == 0 {
			s.Servers = nil
		}
		if len(s.SchedFlags) == 0 {
			s.SchedFlags = nil
		}
		out = append(out, s)
	}
	return out
}

// ipvsadm's order, as seen from ipvsadm -Ln in the sandbox: the kernel listed
// 198.51.100.12 before .11, ipvsadm printed .11 first.
func TestSortedLikeIpvsadm(t *testing.T) {
	srv := func(a string) lab.Server { return lab.Server{Addr: netip.MustParseAddrPort(a)} }
	t1 := &lab.Table{Services: []lab.TableService{
		{Service: lab.Service{FWMark: 10}},
		{Service: lab.Service{Protocol: lab.UDP, Addr: netip.MustParseAddrPort("203.0.113.1:53")}},
		{Service: lab.Service{Protocol: lab.TCP, Addr: netip.MustParseAddrPort("203.0.113.1:443")}},
		{Service: lab.Service{Protocol: lab.TCP, Addr: netip.MustParseAddrPort("203.0.113.1:80"),
			Servers: []lab.Server{srv("198.51.100.12:80"), srv("198.51.100.11:80"), srv("10.0.0.1:80")}},
			Conns: []lab.ServerConns{{Active: 12}, {Active: 11}, {Active: 10}}},
	}}
	got := Sorted(t1)
	var keys []string
	for _, s := range got.Services {
		keys = append(keys, s.Key())
	}
	if want := []string{"tcp:203.0.113.1:80", "tcp:203.0.113.1:443", "udp:203.0.113.1:53", "fwm:10"}; !slices.Equal(keys, want) {
		t.Errorf("services %v, want %v", keys, want)
	}
	s := got.Services[0]
	// 10.0.0.1 and 198.51.100.x are more than 2^31 apart: ipvsadm's signed
	// difference puts 198.51.100.x first.
	var order []string
	for i, d := range s.Servers {
		order = append(order, fmt.Sprintf("%s/%d", d.Addr, s.Conns[i].Active))
	}
	if want := []string{"198.51.100.11:80/11", "198.51.100.12:80/12", "10.0.0.1:80/10"}; !slices.Equal(order, want) {
		t.Errorf("servers %v, want %v (counts follow their server)", order, want)
	}
	if t1.Services[3].Servers[0].Addr.Port() != 80 || t1.Services[0].FWMark != 10 {
		t.Error("Sorted changed its input")
	}
}
