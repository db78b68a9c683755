package ipvsadm

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/lvslab/lvslab/pkg/lab"
)

// Op is an ipvsadm command.
type Op byte

// The commands, named by ipvsadm's short options.
const (
	AddService  Op = 'A'
	EditService Op = 'E'
	DelService  Op = 'D'
	Clear       Op = 'C'
	AddServer   Op = 'a'
	EditServer  Op = 'e'
	DelServer   Op = 'd'
)

// Rule is one parsed ipvsadm command line.
type Rule struct {
	Op      Op
	Service lab.Service // the service it names, with the options given (defaults filled in)
	Server  lab.Server  // for -a, -e, -d
}

// RuleError is a rule that cannot be parsed or applied: which option, and why.
type RuleError struct {
	Option string // e.g. "-s", or "" for the rule as a whole
	Msg    string
}

func (e *RuleError) Error() string {
	if e.Option == "" {
		return e.Msg
	}
	return e.Option + ": " + e.Msg
}

func ruleErr(opt, f string, a ...any) error {
	return &RuleError{Option: opt, Msg: fmt.Sprintf(f, a...)}
}

var longOpts = map[string]string{
	"--add-service": "-A", "--edit-service": "-E", "--delete-service": "-D", "--clear": "-C",
	"--add-server": "-a", "--edit-server": "-e", "--delete-server": "-d",
	"--tcp-service": "-t", "--udp-service": "-u", "--fwmark-service": "-f",
	"--scheduler": "-s", "--persistent": "-p", "--netmask": "-M", "--sched-flags": "-b", "--ipv6": "-6",
	"--real-server": "-r", "--gatewaying": "-g", "--ipip": "-i", "--masquerading": "-m",
	"--weight": "-w", "--u-threshold": "-x", "--l-threshold": "-y",
}

// ParseRule parses one command line, as ipvsadm takes it or ipvsadm-save -n prints
// it ("-A -t 203.0.113.1:80 -s rr"; a leading "ipvsadm" is allowed).
func ParseRule(line string) (Rule, error) {
	args := strings.Fields(line)
	if len(args) > 0 && (args[0] == "ipvsadm" || strings.HasSuffix(args[0], "/ipvsadm")) {
		args = args[1:]
	}
	var r Rule
	var svcOpt, addrArg, serverArg string
	var method string
	var given = map[string]string{}
	persistTimeout := ""
	for i := 0; i < len(args); i++ {
		opt := args[i]
		if l, ok := longOpts[opt]; ok {
			opt = l
		} else if v, ok := strings.CutPrefix(opt, "--"); ok {
			if name, val, ok := strings.Cut(v, "="); ok {
				if l, ok := longOpts["--"+name]; ok {
					opt = l
					args = slices.Insert(args, i+1, val)
				}
			}
		}
		value := func() (string, error) {
			if i+1 >= len(args) || (strings.HasPrefix(args[i+1], "-") && len(args[i+1]) > 1 && !isNumber(args[i+1])) {
				return "", ruleErr(args[i], "needs a value")
			}
			i++
			return args[i], nil
		}
		switch opt {
		case "-A", "-E", "-D", "-C", "-a", "-e", "-d":
			if r.Op != 0 {
				return r, ruleErr(args[i], "a second command in one rule (already -%c)", r.Op)
			}
			r.Op = Op(opt[1])
		case "-t", "-u", "-f":
			if svcOpt != "" {
				return r, ruleErr(args[i], "a second service (already %s)", svcOpt)
			}
			v, err := value()
			if err != nil {
				return r, err
			}
			svcOpt, addrArg = opt, v
		case "-s", "-M", "-b", "-r", "-w", "-x", "-y":
			v, err := value()
			if err != nil {
				return r, err
			}
			if opt == "-r" {
				serverArg = v
			}
			given[opt] = v
		case "-p":
			given[opt] = ""
			if i+1 < len(args) && isNumber(args[i+1]) {
				i++
				persistTimeout = args[i]
			}
		case "-6":
			given[opt] = ""
		case "--tun-type":
			// ipvsadm-save prints it for every tunnel real server; ipip is the
			// kernel's default and the only type lvslab programs.
			v, err := value()
			if err != nil {
				return r, err
			}
			if v != "ipip" {
				return r, ruleErr(opt, "%q: only ipip (the kernel's default tunnel type) is supported", v)
			}
			given[opt] = v
		case "-g", "-i", "-m":
			if method != "" && method != opt {
				return r, ruleErr(args[i], "a second forwarding method (already %s)", method)
			}
			method = opt
		default:
			return r, ruleErr(args[i], "unknown or unsupported option")
		}
	}
	if r.Op == 0 {
		return r, ruleErr("", "no command (-A, -E, -D, -C, -a, -e or -d)")
	}
	if r.Op == Clear {
		if svcOpt != "" || len(given) > 0 || method != "" {
			return r, ruleErr("-C", "takes no other option")
		}
		return r, nil
	}
	if svcOpt == "" {
		return r, ruleErr("", "no service (-t, -u or -f)")
	}
	svc, err := parseServiceAddr(svcOpt, addrArg, given)
	if err != nil {
		return r, err
	}
	serviceOpts := []string{"-s", "-p", "-M", "-b"}
	serverOpts := []string{"-r", "-w", "-x", "-y", "--tun-type"}
	switch r.Op {
	case AddService, EditService:
		for _, o := range serverOpts {
			if _, ok := given[o]; ok {
				return r, ruleErr(o, "is an option of -a/-e, not of -%c", r.Op)
			}
		}
		if method != "" {
			return r, ruleErr(method, "is an option of -a/-e, not of -%c", r.Op)
		}
		if err := serviceOptions(&svc, given, persistTimeout); err != nil {
			return r, err
		}
	case DelService:
		for _, o := range append(serviceOpts, serverOpts...) {
			if _, ok := given[o]; ok {
				return r, ruleErr(o, "-D takes only the service")
			}
		}
	case AddServer, EditServer, DelServer:
		for _, o := range serviceOpts {
			if _, ok := given[o]; ok {
				return r, ruleErr(o, "is an option of -A/-E, not of -%c", r.Op)
			}
		}
		if serverArg == "" {
			return r, ruleErr("-r", "missing: -%c needs the real server", r.Op)
		}
		srv, err := serverOptions(svc, given, method)
		if err != nil {
			return r, err
		}
		if _, ok := given["--tun-type"]; ok && srv.Method != lab.Tunnel {
			return r, ruleErr("--tun-type", "needs -i (ipip tunnelling)")
		}
		if r.Op == DelServer && (method != "" || given["-w"] != "" || given["-x"] != "" || given["-y"] != "") {
			return r, ruleErr("-d", "takes only the service and -r")
		}
		r.Server = srv
	}
	r.Service = svc
	return r, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 32)
	return err == nil
}

func parseServiceAddr(opt, arg string, given map[string]string) (lab.Service, error) {
	var svc lab.Service
	if opt == "-f" {
		m, err := strconv.ParseUint(arg, 0, 32)
		if err != nil || m == 0 {
			return svc, ruleErr("-f", "%q is not a firewall mark (1..4294967295)", arg)
		}
		svc.FWMark = uint32(m)
		_, svc.IPv6 = given["-6"]
		return svc, nil
	}
	if _, ok := given["-6"]; ok {
		return svc, ruleErr("-6", "only for firewall-mark services (-f); an address says its family")
	}
	svc.Protocol = map[string]lab.Protocol{"-t": lab.TCP, "-u": lab.UDP}[opt]
	ap, err := parseHostPort(arg)
	if err != nil {
		return svc, ruleErr(opt, "%q: %v", arg, err)
	}
	svc.Addr = ap
	return svc, nil
}

// parseHostPort reads "addr:port", "[v6]:port", or a bare address (port 0).
func parseHostPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, port := s, "0"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("not an address (like 203.0.113.1:80 or [2001:db8::1]:80)")
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q is out of range (0..65535)", port)
	}
	return netip.AddrPortFrom(a, uint16(p)), nil
}

func serviceOptions(svc *lab.Service, given map[string]string, timeout string) error {
	svc.Scheduler = lab.DefaultScheduler
	if s, ok := given["-s"]; ok {
		sched, err := lab.ParseScheduler(s)
		if err != nil {
			return ruleErr("-s", "%v", err)
		}
		svc.Scheduler = sched
	}
	if _, ok := given["-p"]; ok {
		svc.Persistent = true
		svc.Timeout = lab.DefaultTimeout
		if timeout != "" {
			t, err := strconv.ParseUint(timeout, 10, 32)
			if err != nil || t == 0 {
				return ruleErr("-p", "%q is not a timeout in seconds", timeout)
			}
			svc.Timeout = uint32(t)
		}
	}
	svc.Netmask = svc.MaxNetmask()
	if m, ok := given["-M"]; ok {
		bits, err := lab.ParseNetmask(m, svc.Is6())
		if err != nil {
			return ruleErr("-M", "%q: %v", m, err)
		}
		if !svc.Persistent {
			return ruleErr("-M", "needs -p (the netmask groups clients for persistence)")
		}
		svc.Netmask = bits
	}
	if b, ok := given["-b"]; ok {
		for _, name := range strings.Split(b, ",") {
			f := lab.SchedFlag(name)
			if !svc.Scheduler.HasFlag(f) {
				return ruleErr("-b", "%q is not a flag of scheduler %s (sh: sh-fallback, sh-port; mh: mh-fallback, mh-port)", f, svc.Scheduler)
			}
			if !slices.Contains(svc.SchedFlags, f) {
				svc.SchedFlags = append(svc.SchedFlags, f)
			}
		}
		slices.Sort(svc.SchedFlags)
	}
	return nil
}

func serverOptions(svc lab.Service, given map[string]string, method string) (lab.Server, error) {
	srv := lab.Server{Weight: 1, Method: lab.DR}
	ap, err := parseHostPort(given["-r"])
	if err != nil {
		return srv, ruleErr("-r", "%q: %v", given["-r"], err)
	}
	if ap.Port() == 0 && svc.FWMark == 0 {
		ap = netip.AddrPortFrom(ap.Addr(), svc.Addr.Port()) // ipvsadm: the service's port
	}
	if ap.Addr().Is6() != svc.Is6() {
		return srv, ruleErr("-r", "%q is not of the service's address family", given["-r"])
	}
	srv.Addr = ap
	switch method {
	case "-m":
		srv.Method = lab.NAT
	case "-i":
		srv.Method = lab.Tunnel
	}
	num := func(opt string, max uint64) (uint64, error) {
		v, err := strconv.ParseUint(given[opt], 10, 64)
		if err != nil || v > max {
			return 0, ruleErr(opt, "%q is out of range (0..%d)", given[opt], max)
		}
		return v, nil
	}
	if _, ok := given["-w"]; ok {
		w, err := num("-w", 65535)
		if err != nil {
			return srv, err
		}
		srv.Weight = int(w)
	}
	if _, ok := given["-x"]; ok {
		x, err := num("-x", 1<<32-1)
		if err != nil {
			return srv, err
		}
		srv.Upper = uint32(x)
	}
	if _, ok := given["-y"]; ok {
		y, err := num("-y", 1<<32-1)
		if err != nil {
			return srv, err
		}
		srv.Lower = uint32(y)
	}
	if srv.Upper != 0 && srv.Lower > srv.Upper {
		return srv, ruleErr("-y", "lower threshold %d is above the upper threshold %d", srv.Lower, srv.Upper)
	}
	return srv, nil
}

// Rules is the result of running rules in order: services in order of creation.
type Rules []lab.Service

// Exec runs one rule against the table, as the kernel would: -A of an existing
// service, -E or -D of a missing one, and the like are errors.
func (t *Rules) Exec(r Rule) error {
	find := func() int {
		return slices.IndexFunc(*t, func(s lab.Service) bool { return s.Key() == r.Service.Key() })
	}
	switch r.Op {
	case Clear:
		*t = nil
	case AddService:
		if find() >= 0 {
			return ruleErr("-A", "service %s exists already (use -E to edit it)", r.Service.Key())
		}
		*t = append(*t, r.Service)
	case EditService, DelService:
		i := find()
		if i < 0 {
			return ruleErr("-"+string(r.Op), "no service %s", r.Service.Key())
		}
		if r.Op == DelService {
			*t = slices.Delete(*t, i, i+1)
		} else {
			r.Service.Servers = (*t)[i].Servers
			(*t)[i] = r.Service
		}
	case AddServer, EditServer, DelServer:
		i := find()
		if i < 0 {
			return ruleErr("-"+string(r.Op), "no service %s (add it with -A first)", r.Service.Key())
		}
		svc := &(*t)[i]
		j := slices.IndexFunc(svc.Servers, func(s lab.Server) bool { return s.Addr == r.Server.Addr })
		switch {
		case r.Op == AddServer && j >= 0:
			return ruleErr("-a", "real server %s of %s exists already (use -e to edit it)", r.Server.Addr, svc.Key())
		case r.Op != AddServer && j < 0:
			return ruleErr("-"+string(r.Op), "no real server %s in %s", r.Server.Addr, svc.Key())
		case r.Op == AddServer:
			svc.Servers = append(svc.Servers, r.Server)
		case r.Op == EditServer:
			svc.Servers[j] = r.Server
		default:
			svc.Servers = slices.Delete(svc.Servers, j, j+1)
		}
	}
	return nil
}

// Build runs rule lines in order and returns the resulting services. An error
// names the line (1-based) and the option.
func Build(lines []string) ([]lab.Service, error) {
	var t Rules
	for i, line := range lines {
		r, err := ParseRule(line)
		if err == nil {
			err = t.Exec(r)
		}
		if err != nil {
			return nil, fmt.Errorf("rule %d %q: %w", i+1, line, err)
		}
	}
	return t, nil
}

// ServiceArg is how ipvsadm names a service: "-t 203.0.113.1:80", "-f 10 -6".
func ServiceArg(s lab.Service) string {
	switch {
	case s.FWMark != 0 && s.IPv6:
		return fmt.Sprintf("-f %d -6", s.FWMark)
	case s.FWMark != 0:
		return fmt.Sprintf("-f %d", s.FWMark)
	case s.Protocol == lab.UDP:
		return "-u " + s.Addr.String()
	}
	return "-t " + s.Addr.String()
}

// WriteRules prints services as ipvsadm rules that ParseRule reads back to
// the same services: one -A line per service, then one -a line per real
// server, in the order given, thresholds included.
func WriteRules(w io.Writer, services []lab.Service) error {
	return writeRules(w, services, true)
}

// WriteSave prints services exactly as `ipvsadm-save -n` does, in the order
// given (Sorted gives ipvsadm's): like WriteRules, but without the -x/-y
// thresholds, which ipvsadm-save leaves out (it prints them only with
// --thresholds, which it does not pass; seen with Debian's ipvsadm 1.31).
func WriteSave(w io.Writer, services []lab.Service) error {
	return writeRules(w, services, false)
}

func writeRules(w io.Writer, services []lab.Service, thresholds bool) error {
	var b strings.Builder
	for _, s := range services {
		fmt.Fprintf(&b, "-A %s -s %s", ServiceArg(s), s.Scheduler)
		if len(s.SchedFlags) > 0 {
			fmt.Fprintf(&b, " -b %s", joinFlags(s.SchedFlags))
		}
		if s.Persistent {
			fmt.Fprintf(&b, " -p %d", s.Timeout)
			if s.Netmask != 0 && s.Netmask != s.MaxNetmask() {
				fmt.Fprintf(&b, " -M %s", lab.NetmaskString(s.Netmask, s.Is6()))
			}
		}
		b.WriteString("\n")
		for _, d := range s.Servers {
			fmt.Fprintf(&b, "-a %s -r %s %s -w %d", ServiceArg(s), d.Addr, d.Method.Option(), d.Weight)
			if d.Method == lab.Tunnel {
				b.WriteString(" --tun-type ipip")
			}
			if thresholds && d.Upper != 0 {
				fmt.Fprintf(&b, " -x %d", d.Upper)
			}
			if thresholds && d.Lower != 0 {
				fmt.Fprintf(&b, " -y %d", d.Lower)
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func joinFlags(flags []lab.SchedFlag) string {
	names := make([]string, len(flags))
	for i, f := range flags {
		names[i] = string(f)
	}
	return strings.Join(names, ",")
}
