package keepalived

import (
	"encoding/json"
	"fmt"
	"syscall"

	"github.com/lvslab/lvslab/pkg/lab"
)

// SignalJSON makes a running keepalived write its VRRP instances' state to
// $TMPDIR/keepalived.json (keepalived --signum=JSON: SIGRTMIN+2, 36 with
// glibc's SIGRTMIN of 34; Debian's keepalived is built with JSON).
const SignalJSON = syscall.Signal(36)

// DumpFile is the file keepalived writes on SignalJSON, in its TMPDIR.
const DumpFile = "keepalived.json"

// ParseDump reads keepalived.json, keepalived's dump of its VRRP instances,
// into each instance's state.
func ParseDump(b []byte) (map[string]lab.VRRPState, error) {
	var dump []struct {
		Data struct {
			Name  string `json:"iname"`
			State *int   `json:"state"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &dump); err != nil {
		return nil, fmt.Errorf("%s: %w", DumpFile, err)
	}
	// keepalived's VRRP_STATE_INIT, _BCKP, _MAST, _FAULT (vrrp.h).
	names := []lab.VRRPState{lab.VRRPInit, lab.VRRPBackup, lab.VRRPMaster, lab.VRRPFault}
	out := map[string]lab.VRRPState{}
	for _, d := range dump {
		if d.Data.Name == "" || d.Data.State == nil {
			return nil, fmt.Errorf("%s: an instance without iname or state", DumpFile)
		}
		s := *d.Data.State
		if s < 0 || s >= len(names) {
			return nil, fmt.Errorf("%s: instance %s: state %d is not one keepalived names", DumpFile, d.Data.Name, s)
		}
		out[d.Data.Name] = names[s]
	}
	return out, nil
}
