package verify

import (
	"fmt"
	"os"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"
)

// Kernel is the release of the kernel whose schedulers a model follows, and
// what that release does where IPVS changed between releases. Every known
// difference is decided here, from the release, with the sources it was read
// from.
type Kernel struct {
	Release             string // as the kernel names itself: "6.1.176"
	Major, Minor, Patch int
}

var releaseRE = regexp.MustCompile(`^(\d+)\.(\d+)(?:\.(\d+))?`)

// debianRE finds the upstream stable release in /proc/version on Debian, whose
// uname -r says only "6.1.0-28-amd64".
var debianRE = regexp.MustCompile(`Debian (\d+\.\d+\.\d+)-`)

// ParseKernel reads a release string such as "6.1.176" or "6.1.0-28-amd64".
func ParseKernel(release string) (Kernel, error) {
	m := releaseRE.FindStringSubmatch(release)
	if m == nil {
		return Kernel{}, fmt.Errorf("kernel release %q is not major.minor[.patch]", release)
	}
	k := Kernel{Release: release}
	k.Major, _ = strconv.Atoi(m[1])
	k.Minor, _ = strconv.Atoi(m[2])
	k.Patch, _ = strconv.Atoi(m[3])
	return k, nil
}

// RunningKernel is the kernel this process runs on (the sandbox's, inside it).
func RunningKernel() (Kernel, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return Kernel{}, err
	}
	version, _ := os.ReadFile("/proc/version")
	return kernelOf(unix.ByteSliceToString(u.Release[:]), string(version))
}

// kernelOf is the kernel of a uname release and a /proc/version text: a
// distribution's "6.1.0-28-amd64" says its stable release only in the version
// text ("... #1 SMP PREEMPT_DYNAMIC Debian 6.1.119-1 (2024-11-22)"), after the
// compiler's own "Debian 12.2.0-14".
func kernelOf(release, version string) (Kernel, error) {
	k, err := ParseKernel(release)
	if err != nil || k.Patch != 0 {
		return k, err
	}
	for _, m := range debianRE.FindAllStringSubmatch(version, -1) {
		if d, err := ParseKernel(m[1]); err == nil && d.Major == k.Major && d.Minor == k.Minor {
			k.Patch = d.Patch
			k.Release = release + " (" + m[1] + ")"
		}
	}
	return k, nil
}

func (k Kernel) String() string { return k.Release }

// atLeast reports whether k is major.minor.patch or newer.
func (k Kernel) atLeast(major, minor, patch int) bool {
	if k.Major != major {
		return k.Major > major
	}
	if k.Minor != minor {
		return k.Minor > minor
	}
	return k.Patch >= patch
}

// TotalConnsOverhead reports whether lc, wlc and lblc weigh a real server by
// activeconns*256 + totalconns (Linux 6.1.183 on, "ipvs: add totalconns for
// dest": include/net/ip_vs.h, ip_vs_dest_conn_overhead, in 6.1.192 line 1746)
// rather than activeconns*256 + inactconns (6.1.176 and before, the same
// function). known is false for a release lvslab has no sources for: only the
// 6.1 series is known (its stable updates brought the change in 6.1.183).
func (k Kernel) TotalConnsOverhead() (total, known bool) {
	switch {
	case k.Major == 6 && k.Minor == 1:
		return k.atLeast(6, 1, 183), true
	case !k.atLeast(6, 1, 0):
		return false, true // older kernels: the long-standing inactconns formula
	}
	return false, false
}
