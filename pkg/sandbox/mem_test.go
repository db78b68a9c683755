package sandbox

import (
	"os"
	"strings"
	"testing"
)

func TestParseMem(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"2G", 2 << 30}, {"2g", 2 << 30}, {"1536M", 1536 << 20}, {"512MiB", 512 << 20},
		{"4GB", 4 << 30}, {" 1T ", 1 << 40}, {"1048576K", 1 << 30}, {"268435456", 256 << 20},
		{"100B", 100},
	} {
		got, err := ParseMem(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseMem(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "G", "2X", "-1G", "1.5G", "0", "0M", "2 G B", "99999999999999999999", "9000000000T"} {
		if got, err := ParseMem(in); err == nil {
			t.Errorf("ParseMem(%q) = %d, want an error", in, got)
		}
	}
}

func TestMemFor(t *testing.T) {
	for _, c := range []struct{ avail, want int64 }{
		{200 << 20, MinDefaultMem},  // a small host still gets the floor
		{1 << 30, MinDefaultMem},    // half is 512M
		{3 << 30, 1536 << 20},       // half
		{3<<30 + 12345, 1536 << 20}, // rounded down to MiB
		{24 << 30, MaxDefaultMem},   // capped
	} {
		if got := memFor(MemInfo{Total: 2 * c.avail, Available: c.avail}); got != c.want {
			t.Errorf("memFor(available %d) = %d, want %d", c.avail, got, c.want)
		}
	}
}

func TestGuestMemEnv(t *testing.T) {
	t.Setenv(EnvMem, "2G")
	if got, err := GuestMem(); err != nil || got != 2<<30 {
		t.Errorf("GuestMem with %s=2G: %d, %v", EnvMem, got, err)
	}
	for _, bad := range []string{"lots", "64M"} {
		t.Setenv(EnvMem, bad)
		_, err := GuestMem()
		if err == nil || !strings.Contains(err.Error(), EnvMem) || !strings.Contains(err.Error(), bad) {
			t.Errorf("GuestMem with %s=%s: error %v, want one naming the variable and the value", EnvMem, bad, err)
		}
	}
	os.Unsetenv(EnvMem) // t.Setenv restores it at the end
	got, err := GuestMem()
	if err != nil || got < MinDefaultMem || got > MaxDefaultMem {
		t.Errorf("GuestMem unset: %d, %v", got, err)
	}
}

func TestParseMemInfo(t *testing.T) {
	in := "MemTotal:       24683656 kB\nMemFree:        23794584 kB\nMemAvailable:   24290464 kB\nBuffers: 1 kB\n"
	mi, err := parseMemInfo(strings.NewReader(in))
	if err != nil || mi.Total != 24683656<<10 || mi.Available != 24290464<<10 {
		t.Errorf("parseMemInfo: %+v, %v", mi, err)
	}
	for _, bad := range []string{"MemFree: 1 kB\n", "MemTotal: 1 kB\n", "MemTotal: x kB\nMemAvailable: 1 kB\n", "MemTotal: 1 MB\nMemAvailable: 1 kB\n"} {
		if mi, err := parseMemInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMemInfo(%q) = %+v, want an error", bad, mi)
		}
	}
}

func TestDir(t *testing.T) {
	t.Setenv(EnvDir, "")
	if got := Dir(); got != DefaultDir {
		t.Errorf("Dir() = %q, want %q", got, DefaultDir)
	}
	t.Setenv(EnvDir, "/tmp/elsewhere")
	if got := Dir(); got != "/tmp/elsewhere" {
		t.Errorf("Dir() with %s set = %q", EnvDir, got)
	}
}
