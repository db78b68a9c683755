package ipvsadm

import (
	"bytes"
	"reflect"
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
	if err := WriteSave(&save, svcs); err != nil {
		t.Fatal(err)
	}
	want := `-A -t 203.0.113.1:80 -s wrr
-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 5
-A -u 203.0.113.1:53 -s wrr
-a -u 203.0.113.1:53 -r 198.51.100.11:53 -g -w 3 -x 100 -y 10
-a -u 203.0.113.1:53 -r 198.51.100.12:53 -i -w 0
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

// FuzzRule: any line either fails to parse, or parses to a rule whose printed
// form parses back to the same rule.
func FuzzRule(f *testing.F) {
	for _, r := range seedRules {
		f.Add(r)
	}
	f.Add("-A -t [::1]:0 -s sh -b sh-port -p")
	f.Add("--add-server --fwmark-service 7 --real-server 1.2.3.4 --ipip --weight 9")
	f.Fuzz(func(t *testing.T, line string) {
		r, err := ParseRule(line)
		if err != nil {
			return
		}
		var t1 Rules
		if r.Op != AddService {
			return
		}
		if err := t1.Exec(r); err != nil {
			t.Fatalf("exec %q: %v", line, err)
		}
		var b bytes.Buffer
		if err := WriteSave(&b, t1); err != nil {
			t.Fatal(err)
		}
		again, err := Build(strings.Split(strings.TrimSpace(b.String()), "\n"))
		if err != nil {
			t.Fatalf("%q printed as %q, which does not parse: %v", line, b.String(), err)
		}
		if !reflect.DeepEqual([]lab.Service(t1), again) {
			t.Fatalf("%q: round trip\n got %+v\nwant %+v", line, again, t1)
		}
	})
}
