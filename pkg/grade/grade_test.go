package grade

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/verify"
)

var checks = []lab.Check{
	{Name: "answers alternate", Points: 2, Hint: "rr: -s rr"},
	{Name: "web2 is there", Points: 1, Hint: "add web2 with -m"},
	{Name: "ARP", Points: 1},
}

func TestScore(t *testing.T) {
	g := Score("stu01", checks, []verify.Outcome{
		{Passed: true},
		{Passed: false, Message: "web2 never answered"},
		{Skipped: true, Message: "could not judge"},
	})
	if g.Points != 2 || g.Max != 4 {
		t.Fatalf("%d/%d", g.Points, g.Max)
	}
	if g.Checks[0].Hint != "" || g.Checks[1].Hint != "add web2 with -m" || g.Checks[2].Points != 0 || !g.Checks[2].Skipped {
		t.Fatalf("%+v", g.Checks)
	}
}

// Labs are graded at most concurrency at once, and come back in order; a
// lab that cannot be graded has its error.
func TestAllBounded(t *testing.T) {
	var now, most atomic.Int32
	labs := []string{"a", "b", "c", "d", "e", "f", "g"}
	got := All(context.Background(), labs, 3, func(_ context.Context, name string) (Lab, error) {
		n := now.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		now.Add(-1)
		if name == "c" {
			return Lab{}, errors.New("no such lab")
		}
		return Score(name, checks, []verify.Outcome{{Passed: true}, {Passed: true}, {Passed: true}}), nil
	})
	if most.Load() != 3 {
		t.Errorf("%d at once, want 3", most.Load())
	}
	for i, g := range got {
		if g.Lab != labs[i] {
			t.Fatalf("order: %v", got)
		}
	}
	if got[2].Error != "no such lab" || got[0].Points != 4 {
		t.Fatalf("%+v %+v", got[2], got[0])
	}
}

func TestCSVAndTable(t *testing.T) {
	labs := []Lab{
		Score("stu01", checks, []verify.Outcome{{Passed: true}, {Passed: true}, {Passed: true}}),
		Score("stu02", checks, []verify.Outcome{{Passed: true}, {Message: `web2, "never"`}, {Passed: true}}),
		{Lab: "stu03", Error: "no such lab"},
	}
	var b bytes.Buffer
	if err := WriteCSV(&b, labs); err != nil {
		t.Fatal(err)
	}
	want := `lab,check,points,max,passed,skipped,message,hint
stu01,answers alternate,2,2,true,false,,
stu01,web2 is there,1,1,true,false,,
stu01,ARP,1,1,true,false,,
stu02,answers alternate,2,2,true,false,,
stu02,web2 is there,0,1,false,false,"web2, ""never""",add web2 with -m
stu02,ARP,1,1,true,false,,
stu03,,0,0,false,false,no such lab,
`
	if b.String() != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	if err := WriteTable(&b, labs, checks); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"stu01  ✓ 2  ✓ 1  ✓ 1  4/4", "stu02  ✓ 2  ✗ 0  ✓ 1  3/4", "stu03  error: no such lab", "stu02: web2 is there: add web2 with -m"} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("table has no %q:\n%s", line, b.String())
		}
	}
}
