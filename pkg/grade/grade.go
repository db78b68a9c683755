// Package grade scores labs against a scenario's checks, for a class: each
// check is worth its points (1 unless the scenario says), a failed or
// skipped one earns none and shows the check's hint. Results are written as
// CSV (one row per lab and check), JSON, and a table for the terminal.
package grade

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/verify"
)

// Check is one check's grade in one lab.
type Check struct {
	Check   string `json:"check"`
	Points  int    `json:"points"`
	Max     int    `json:"max"`
	Passed  bool   `json:"passed"`
	Skipped bool   `json:"skipped,omitempty"`
	Message string `json:"message,omitempty"` // why it failed or was skipped
	Hint    string `json:"hint,omitempty"`    // the scenario's hint, for a check that earned nothing
}

// Lab is one lab's grade.
type Lab struct {
	Lab      string        `json:"lab"`
	Points   int           `json:"points"`
	Max      int           `json:"max"`
	Checks   []Check       `json:"checks"`
	Error    string        `json:"error,omitempty"` // the lab could not be graded at all
	Duration time.Duration `json:"durationNs"`
}

// Score grades outcomes, one per check in order (what verify.Judge.Run
// returns for a scenario's checks), against the checks' points and hints.
func Score(labName string, checks []lab.Check, outcomes []verify.Outcome) Lab {
	g := Lab{Lab: labName, Checks: []Check{}}
	for i, c := range checks {
		r := Check{Check: c.Name, Max: c.Points}
		if i < len(outcomes) {
			o := outcomes[i]
			r.Passed, r.Skipped, r.Message = o.Passed && !o.Skipped, o.Skipped, o.Message
		} else {
			r.Message = "not run"
		}
		if r.Passed {
			r.Points = c.Points
		} else {
			r.Hint = c.Hint
		}
		g.Points += r.Points
		g.Max += r.Max
		g.Checks = append(g.Checks, r)
	}
	return g
}

// Grader grades one lab.
type Grader func(ctx context.Context, labName string) (Lab, error)

// All grades labs with at most concurrency at once, and returns their grades
// in the order given. A lab that cannot be graded gets no points and its
// error.
func All(ctx context.Context, labs []string, concurrency int, grade Grader) []Lab {
	if concurrency < 1 {
		concurrency = 1
	}
	out := make([]Lab, len(labs))
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	for i, name := range labs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			g, err := grade(ctx, name)
			if err != nil {
				g = Lab{Lab: name, Checks: []Check{}, Error: err.Error()}
			}
			g.Lab, g.Duration = name, time.Since(start)
			out[i] = g
		}()
	}
	wg.Wait()
	return out
}

// WriteCSV writes one row per lab and check: lab, check, points, max,
// passed, skipped, message, hint; a lab that could not be graded has one row
// with its error.
func WriteCSV(w io.Writer, labs []Lab) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"lab", "check", "points", "max", "passed", "skipped", "message", "hint"})
	for _, l := range labs {
		if l.Error != "" {
			_ = cw.Write([]string{l.Lab, "", "0", "0", "false", "false", l.Error, ""})
			continue
		}
		for _, c := range l.Checks {
			_ = cw.Write([]string{l.Lab, c.Check, strconv.Itoa(c.Points), strconv.Itoa(c.Max),
				strconv.FormatBool(c.Passed), strconv.FormatBool(c.Skipped), c.Message, c.Hint})
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteJSON writes the grades as an indented JSON array.
func WriteJSON(w io.Writer, labs []Lab) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(labs)
}

// WriteTable writes a table for the terminal: a row per lab, a column per
// check (✓ with its points, ✗), the total; then each failed check's hint.
func WriteTable(w io.Writer, labs []Lab, checks []lab.Check) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	head := []string{"LAB"}
	for i := range checks {
		head = append(head, fmt.Sprintf("#%d", i+1))
	}
	fmt.Fprintln(tw, strings.Join(append(head, "POINTS"), "\t"))
	for _, l := range labs {
		row := []string{l.Lab}
		if l.Error != "" {
			fmt.Fprintf(tw, "%s\terror: %s\n", l.Lab, l.Error)
			continue
		}
		for _, c := range l.Checks {
			switch {
			case c.Passed:
				row = append(row, fmt.Sprintf("✓ %d", c.Points))
			case c.Skipped:
				row = append(row, "- 0")
			default:
				row = append(row, "✗ 0")
			}
		}
		row = append(row, fmt.Sprintf("%d/%d", l.Points, l.Max))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for i, c := range checks {
		fmt.Fprintf(w, "#%d %s (%d points)\n", i+1, c.Name, c.Points)
	}
	for _, l := range labs {
		for _, c := range l.Checks {
			if !c.Passed && c.Hint != "" {
				fmt.Fprintf(w, "%s: %s: %s\n", l.Lab, c.Check, c.Hint)
			}
		}
	}
	return nil
}
