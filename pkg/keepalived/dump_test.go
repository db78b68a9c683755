package keepalived

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/lvslab/lvslab/pkg/lab"
)

// The signal number is the one this machine's keepalived gives for JSON.
func TestSignalJSON(t *testing.T) {
	path, err := exec.LookPath("keepalived")
	if err != nil {
		t.Skip("no keepalived here: the sandbox image's is checked by the ha e2e specs")
	}
	out, err := exec.Command(path, "--signum=JSON").Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || n != int(SignalJSON) {
		t.Fatalf("keepalived --signum=JSON: %q, lvslab sends %d", out, SignalJSON)
	}
}

func TestParseDump(t *testing.T) {
	// The shape keepalived 2.2.7 writes (fields trimmed).
	b := []byte(`[{"data":{"iname":"VI_OUT","state":2,"wantstate":2,"vrid":51},"stats":{"advert_rcvd":0}},
		{"data":{"iname":"VI_IN","state":1},"stats":{}},{"data":{"iname":"VI_X","state":3},"stats":{}}]`)
	got, err := ParseDump(b)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]lab.VRRPState{"VI_OUT": lab.VRRPMaster, "VI_IN": lab.VRRPBackup, "VI_X": lab.VRRPFault}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("%s: got %s, want %s", k, got[k], v)
		}
	}
	for _, bad := range []string{`[{"data":{"iname":"VI_1","state":7}}]`, `[{"data":{"iname":"VI_1"}}]`, `{`} {
		if _, err := ParseDump([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}
