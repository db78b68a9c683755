package report

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/verify"
)

// outcomes are two real runs' results: nat-steps (sequences, steps) and
// dr-arp-flux (ARP replies, and the frames its check captured), as lvslab
// verify --json wrote them.
func outcomes(t *testing.T) []verify.Outcome {
	t.Helper()
	var all []verify.Outcome
	for _, f := range []string{"testdata/nat-steps.json", "testdata/dr-arp-flux.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var o []verify.Outcome
		if err := json.Unmarshal(b, &o); err != nil {
			t.Fatal(err)
		}
		all = append(all, o...)
	}
	return all
}

func sample(t *testing.T) Report {
	os := outcomes(t)
	// One failed check, its observed sequence off the prediction at 3.
	failed := verify.Outcome{Check: "a check that failed <here>", Kind: "http", What: "4 HTTP requests", Message: "sequence differs at 3",
		Predicted: []string{"web1", "web2", "web1", "web2"}, Observed: []string{"web1", "web2", "web2", "web1"}, Counts: map[string]int{"web1": 2, "web2": 2}}
	return Report{Lab: "nat-steps-verify", Scenario: "scenarios/nat-steps.yaml", Kernel: "6.1.176", At: time.Date(2026, 11, 26, 2, 0, 0, 0, time.UTC),
		Outcomes: append(os, failed),
		Table:    "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\nTCP  203.0.113.1:80 rr\n",
		Conns:    ConnTable([]verify.Conn{}),
	}
}

func TestWrite(t *testing.T) {
	var b bytes.Buffer
	if err := Write(&b, sample(t)); err != nil {
		t.Fatal(err)
	}
	html := b.String()
	for _, want := range []string{
		"<title>lvslab verify: nat-steps-verify (failed)</title>",
		`<strong id="verdict">failed</strong>`,
		"a check that failed &lt;here&gt;", // escaped
		`<td class="differ">web2</td>`,
		"step 3: ", // steps group the checks
		"<code>8e:d0:67:73:de:d0</code>",
		"<summary>captured frames (4)</summary>",
		"ARP 203.0.113.1 is-at d6:9b:f6:26:1a:45  (web1 &gt; client)",
		`<pre id="table">IP Virtual Server`,
		"IPVS connection entries",
		"kernel <code>6.1.176</code>",
		`<svg class="bars"`,
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the page has no %q", want)
		}
	}
	for _, outside := range []string{"src=", "href=", "url(", "@import", "<script", "<link"} {
		if strings.Contains(html, outside) {
			t.Errorf("the page refers outside: %s", outside)
		}
	}
}

func TestConnTable(t *testing.T) {
	got := ConnTable([]verify.Conn{{Proto: "TCP", Expires: 118, State: "TIME_WAIT"}})
	if !strings.Contains(got, "TCP 01:58  TIME_WAIT   ") {
		t.Fatalf("%q", got)
	}
}
