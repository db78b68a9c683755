package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// EnvMem names the environment variable that sets the guest's memory, e.g.
// "2G" (binary units K, M, G, T; a plain number is bytes).
const EnvMem = "LVSLAB_SANDBOX_MEM"

// Bounds of the guest memory sized from the host (DefaultMem), and the least
// LVSLAB_SANDBOX_MEM may ask for.
const (
	MinDefaultMem int64 = 512 << 20
	MaxDefaultMem int64 = 8 << 30
	minMem        int64 = 128 << 20
)

// GuestMem is the guest memory, in bytes, a kernel boots with when its Config
// names none: LVSLAB_SANDBOX_MEM when set (an error names the variable and its
// value when it is not a size), else DefaultMem. The CLI may call it first to
// report a bad value before anything starts.
func GuestMem() (int64, error) {
	if v, ok := os.LookupEnv(EnvMem); ok {
		n, err := ParseMem(v)
		if err != nil {
			return 0, fmt.Errorf("sandbox: %s=%q: %w", EnvMem, v, err)
		}
		if n < minMem {
			return 0, fmt.Errorf("sandbox: %s=%q: %d MiB is less than the %d MiB a sandbox kernel needs", EnvMem, v, n>>20, minMem>>20)
		}
		return n, nil
	}
	return DefaultMem()
}

// DefaultMem sizes the guest from the host: half of the host's available
// memory, within [MinDefaultMem, MaxDefaultMem].
//
// The guest's memory is a sparse file that UML maps (on /dev/shm or $TMPDIR)
// and the host only backs the pages the guest touches, so a generous size costs
// nothing until labs use it; half of what is available leaves the other half to
// the host. 512 MiB is the floor because a guest with less cannot hold many labs
// (and 512 MiB was the old fixed size); 8 GiB is the ceiling because that holds
// a whole class's labs, and a larger guest only spends more of the host at boot
// on the kernel's page tables.
func DefaultMem() (int64, error) {
	mi, err := ReadMemInfo()
	if err != nil {
		return 0, fmt.Errorf("sandbox: size the guest's memory: %w", err)
	}
	return memFor(mi), nil
}

// memFor is DefaultMem's rule, rounded down to whole MiB.
func memFor(host MemInfo) int64 {
	return min(max(host.Available/2, MinDefaultMem), MaxDefaultMem) &^ (1<<20 - 1)
}

// memRE is a size: digits, then an optional binary unit.
var memRE = regexp.MustCompile(`(?i)^\s*([0-9]+)\s*(?:([KMGT])(?:i?B)?|B)?\s*$`)

// ParseMem reads a memory size: digits with an optional binary unit K, M, G or
// T (any case, optionally followed by "iB" or "B"); a plain number is bytes.
func ParseMem(s string) (int64, error) {
	m := memRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size (e.g. 2G, 1536M)", s)
	}
	shift := map[string]int{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[strings.ToUpper(m[2])]
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || n > (1<<62)>>shift {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("%q is no memory", s)
	}
	return n << shift, nil
}

// MemInfo is a kernel's memory as its /proc/meminfo reports it, in bytes.
type MemInfo struct {
	Total     int64 // MemTotal
	Available int64 // MemAvailable: what new processes can get without swapping
}

// ReadMemInfo reads this kernel's /proc/meminfo: the host's on the host, the
// guest's inside the sandbox.
func ReadMemInfo() (MemInfo, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return MemInfo{}, err
	}
	return parseMemInfo(bytes.NewReader(b))
}

func parseMemInfo(r io.Reader) (MemInfo, error) {
	var mi MemInfo
	found := 0
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		var dst *int64
		switch key {
		case "MemTotal":
			dst = &mi.Total
		case "MemAvailable":
			dst = &mi.Available
		}
		if !ok || dst == nil {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return MemInfo{}, fmt.Errorf("meminfo: malformed line %q", sc.Text())
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return MemInfo{}, fmt.Errorf("meminfo: %s: %w", key, err)
		}
		*dst = n << 10
		found++
	}
	if err := sc.Err(); err != nil {
		return MemInfo{}, fmt.Errorf("meminfo: %w", err)
	}
	if found != 2 {
		return MemInfo{}, fmt.Errorf("meminfo: no MemTotal or MemAvailable")
	}
	return mi, nil
}

// guestMemory reads the guest's /proc/meminfo through an exec; bounded, since a
// guest out of memory may be slow to start even cat.
func guestMemory(ctx context.Context, m *mux, grace time.Duration) (MemInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code, err := m.exec(ctx, grace, Request{Argv: []string{"cat", "/proc/meminfo"}}, nil, &out, &errOut)
	if err == nil && code != 0 {
		err = fmt.Errorf("cat /proc/meminfo: exit status %d: %s", code, strings.TrimSpace(errOut.String()))
	}
	if err != nil {
		return MemInfo{}, fmt.Errorf("sandbox: the guest's memory: %w", err)
	}
	mi, err := parseMemInfo(&out)
	if err != nil {
		return MemInfo{}, fmt.Errorf("sandbox: the guest's memory: %w", err)
	}
	return mi, nil
}
