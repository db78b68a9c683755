package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/apply"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/jsonview"
	"github.com/lvslab/lvslab/pkg/lab"
	htmlreport "github.com/lvslab/lvslab/pkg/report"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/spf13/cobra"
)

func (a *app) verifyCommand() *cobra.Command {
	var o VerifyOptions
	var driver, runtime string
	c := &cobra.Command{
		Use:   "verify [--client go|curl] [--json] [--junit FILE] [--html FILE] [--keep] [--runtime netns|containerlab] [--reset-schedulers] SCENARIO|LAB",
		Short: "run the checks a scenario declares; exit status 1 on any failure, 2 when some were skipped",
		Long: `Run the checks a scenario declares: against a fresh lab of its own when given a
scenario file (exact predictions need a director that has served nothing), or
against a running lab when given its name. Prints a bar per server, predicted and
observed sequences, ARP replies, and pass or fail per check, with the reason of
every failure and every skip. Exit status: 0 when every check passed, 1 when any
failed, 2 when some could not be judged (skipped) and none failed; --allow-skip
turns that 2 into 0.

A lab that has served traffic hides where rr and wrr stand in their lists and
what lblc and lblcr cache: their checks are skipped there, unless
--reset-schedulers lets verify delete and re-add each such service before its
first check (its real servers keep their connection counts, from the kernel's
trash). That is the way to go through many scenarios on one deployed lab:
lvslab apply, then lvslab verify --reset-schedulers.`,
		Args: exactArgs(1, "a scenario file or a running lab's name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := lab.ParseDriver(driver)
			if err != nil {
				return usageError{fmt.Errorf("--client %w", err)}
			}
			o.Target, o.Driver = args[0], d
			switch o.Runtime = lab.Runtime(runtime); o.Runtime {
			case lab.RuntimeNetns, lab.RuntimeContainerlab:
			default:
				return usageError{fmt.Errorf("--runtime %q: give netns or containerlab", runtime)}
			}
			if cmd.Flags().Changed("runtime") && !isFile(o.Target) {
				return usageError{fmt.Errorf("--runtime makes the fresh lab of a scenario file; %s is not a file (a running lab keeps its runtime)", o.Target)}
			}
			return a.backend.Verify(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&driver, "client", string(lab.DriverGo), "HTTP driver: go (one process, fast) or curl (the real curl binary, as the lab uses)")
	c.Flags().BoolVar(&o.JSON, "json", false, "print the results as JSON")
	c.Flags().StringVar(&o.JUnit, "junit", "", "also write a JUnit XML report to this file")
	c.Flags().StringVar(&o.HTML, "html", "", "also write a self-contained HTML report to this file (sequences, bar charts, ARP replies, the director's tables at the end)")
	c.Flags().BoolVar(&o.Keep, "keep", false, "keep the fresh lab built for a scenario file")
	c.Flags().BoolVar(&o.AllowSkip, "allow-skip", false, "exit 0, not 2, when checks were skipped and none failed")
	c.Flags().StringVar(&runtime, "runtime", string(lab.RuntimeNetns), "how a scenario file's fresh lab is made: netns or containerlab")
	c.Flags().BoolVar(&o.ResetSchedulers, "reset-schedulers", false, "delete and re-add each rr, wrr, lblc or lblcr service before its first check, so that a lab that has served traffic can be judged")
	return labCommand(c)
}

func isFile(target string) bool {
	st, err := os.Stat(target)
	return err == nil && !st.IsDir()
}

// verifySuffix names the fresh lab verify builds for a scenario file.
const verifySuffix = "-verify"

// verifyName is the fresh lab's name: the scenario's, cut so that the suffix
// still fits a lab name.
func verifyName(name string) string {
	if n := scenario.MaxLabName - len(verifySuffix); len(name) > n {
		name = name[:n]
	}
	return name + verifySuffix
}

// report runs the judge and prints its outcomes as asked.
func report(ctx context.Context, w io.Writer, o VerifyOptions, s *scenario.Scenario, j *verify.Judge) error {
	results := j.Run(ctx)
	if o.HTML != "" {
		if err := writeHTML(o.HTML, s, j, results); err != nil {
			return err
		}
	}
	if o.JUnit != "" {
		if err := writeJUnit(o.JUnit, s.Name, j.Kernel, results); err != nil {
			return err
		}
	}
	if o.JSON {
		b, err := jsonview.Marshal(results)
		if err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	} else {
		writeResults(w, j.Lab, s.File, j.Kernel, results)
	}
	return verdictStatus(results, o.AllowSkip)
}

// writeHTML writes the HTML report of a run, with the director's tables as
// the run left them.
func writeHTML(file string, s *scenario.Scenario, j *verify.Judge, results []verify.Outcome) error {
	r := htmlreport.Report{Lab: j.Lab, Scenario: s.File, Kernel: j.Kernel.String(), At: time.Now(), Outcomes: results}
	if d, ok := j.Nodes[j.Director]; ok {
		var b strings.Builder
		if t, err := apply.ReadTable(d); err == nil && ipvsadm.WriteList(&b, t) == nil {
			r.Table = b.String()
		}
		if conns, err := verify.ReadConns(d); err == nil {
			r.Conns = htmlreport.ConnTable(conns)
		}
	}
	var b bytes.Buffer
	if err := htmlreport.Write(&b, r); err != nil {
		return err
	}
	return os.WriteFile(file, b.Bytes(), 0o644)
}

// Exit statuses of lvslab verify.
const (
	exitFailed  = 1 // a check failed
	exitSkipped = 2 // none failed, but some could not be judged (--allow-skip makes this 0)
)

// verdictStatus is verify's exit: 0 when every check passed, exitFailed when
// any failed, exitSkipped when some were skipped and none failed, unless
// allowSkip.
func verdictStatus(results []verify.Outcome, allowSkip bool) error {
	skipped := false
	for _, r := range results {
		switch {
		case r.Skipped:
			skipped = true
		case !r.Passed:
			return errExit(exitFailed)
		}
	}
	if skipped && !allowSkip {
		return errExit(exitSkipped)
	}
	return nil
}

// writeResults prints results for people: a bar per server, predicted and
// observed sequences, ARP replies, and pass or fail per check.
func writeResults(w io.Writer, labName, file string, k verify.Kernel, results []verify.Outcome) {
	fmt.Fprintf(w, "lab %s (%s) on kernel %s\n", labName, relPath(file), k)
	passed, failed, skipped := 0, 0, 0
	step := ""
	for _, r := range results {
		if r.Step != step {
			step = r.Step
			fmt.Fprintf(w, "\n── %s ──\n", step)
		}
		mark := "✓"
		switch {
		case r.Skipped:
			mark, skipped = "-", skipped+1
		case r.Passed:
			passed++
		default:
			mark, failed = "✗", failed+1
		}
		fmt.Fprintf(w, "\n%s %s\n  %s (%.2fs)\n", mark, r.Check, r.What, r.Duration.Seconds())
		if len(r.Counts) > 0 {
			names := make([]string, 0, len(r.Counts))
			top := 0
			for n, c := range r.Counts {
				names = append(names, n)
				top = max(top, c)
			}
			sort.Strings(names)
			for _, n := range names {
				bar := strings.Repeat("█", max(1, r.Counts[n]*40/top))
				fmt.Fprintf(w, "  %-10s %s %d\n", n, bar, r.Counts[n])
			}
		}
		if r.Predicted != nil {
			fmt.Fprintf(w, "  predicted %s\n", short(r.Predicted))
		}
		if r.Observed != nil {
			fmt.Fprintf(w, "  observed  %s\n", short(r.Observed))
		}
		for _, rep := range r.Replies {
			fmt.Fprintf(w, "  ARP reply from %-10s %s\n", rep.Node, rep.MAC)
		}
		if r.Kind == lab.CheckARP && len(r.Replies) == 0 {
			fmt.Fprintln(w, "  no ARP reply")
		}
		for _, f := range r.Frames {
			fmt.Fprintf(w, "  | %s\n", f)
		}
		if r.Message != "" {
			fmt.Fprintf(w, "  %s\n", r.Message)
		}
		for i, e := range r.Errors {
			if i == 3 {
				fmt.Fprintf(w, "  ... %d more errors\n", len(r.Errors)-3)
				break
			}
			fmt.Fprintf(w, "  error: %s\n", e)
		}
	}
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped\n", passed, failed, skipped)
}

func short(seq []string) string {
	out := make([]string, len(seq))
	for i, s := range seq {
		if s == "" {
			s = "-"
		}
		out[i] = s
	}
	if len(out) > 24 {
		return strings.Join(out[:24], " ") + fmt.Sprintf(" ... (%d)", len(out))
	}
	return strings.Join(out, " ")
}

type junitSuite struct {
	XMLName    xml.Name        `xml:"testsuite"`
	Name       string          `xml:"name,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       float64         `xml:"time,attr"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Class   string        `xml:"classname,attr"`
	Time    float64       `xml:"time,attr"`
	Failure *junitFailure `xml:"failure,omitempty"`
	Skipped *junitFailure `xml:"skipped,omitempty"`
	Out     string        `xml:"system-out,omitempty"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
}

func writeJUnit(path, labName string, k verify.Kernel, results []verify.Outcome) error {
	s := junitSuite{Name: "lvslab verify " + labName, Tests: len(results),
		Properties: []junitProperty{{Name: "kernel", Value: k.Release}}}
	var total time.Duration
	for _, r := range results {
		c := junitCase{Name: r.Check, Class: labName, Time: r.Duration.Seconds(), Out: r.What}
		if r.Step != "" {
			c.Class = labName + " / " + r.Step
		}
		switch {
		case r.Skipped:
			c.Skipped = &junitFailure{Message: r.Message}
			s.Skipped++
		case !r.Passed:
			c.Failure = &junitFailure{Message: r.Message}
			s.Failures++
		}
		total += r.Duration
		s.Cases = append(s.Cases, c)
	}
	s.Time = total.Seconds()
	b, err := xml.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append([]byte(xml.Header), append(b, '\n')...), 0o644)
}

// relPath writes file relative to the working directory when it lies under
// it (scenarios/nat-rr.yaml, as the user typed it), else as it is.
func relPath(file string) string {
	wd, err := os.Getwd()
	if err != nil || !filepath.IsAbs(file) {
		return file
	}
	if rel, err := filepath.Rel(wd, file); err == nil && filepath.IsLocal(rel) {
		return rel
	}
	return file
}
