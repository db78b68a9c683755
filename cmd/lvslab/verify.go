package main

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
)

func cmdVerify(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	client := fs.String("client", "go", "HTTP driver: go (one process, fast) or curl (the real curl binary, as the lab uses)")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	junit := fs.String("junit", "", "also write a JUnit XML report to this file")
	keep := fs.Bool("keep", false, "keep the fresh lab built for a scenario file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("verify: give a scenario file or a running lab's name")
	}
	if *client != "go" && *client != "curl" {
		return fmt.Errorf("verify: --client %q: want go or curl", *client)
	}
	target := fs.Arg(0)
	_, statErr := os.Stat(target)
	isFile := statErr == nil
	var s *scenario.Scenario
	if isFile {
		var err error
		if s, err = scenario.Load(target); err != nil {
			return err // bad input fails before anything is built anywhere
		}
	}
	if !inSandbox() {
		_, localErr := store().Load(target)
		needSandbox := (isFile && !hostCanIPVS()) || (!isFile && localErr != nil && sandbox.Running(sandbox.DefaultDir))
		if needSandbox {
			wasRunning := sandbox.Running(sandbox.DefaultDir)
			err := forward(ctx, isFile, append([]string{"verify"}, args...)...)
			if !wasRunning {
				if labs, _ := sandboxLabs(ctx); len(labs) == 0 {
					err = errors.Join(err, sandbox.Stop(ctx, sandbox.DefaultDir))
				}
			}
			return err
		}
	}

	v := &scenario.Verifier{Driver: *client}
	if isFile {
		// A fresh lab of its own: exact predictions need a director that has
		// served nothing yet, and a lab of the scenario may be up already.
		if err := s.Rename(verifyName(s.Name)); err != nil {
			return err
		}
		r, err := scenario.DefaultRunner()
		if err != nil {
			return err
		}
		lab, err := r.Up(ctx, s)
		if err != nil {
			return err
		}
		if !*keep {
			defer r.Down(context.WithoutCancel(ctx), s.Name)
		}
		v.Scenario, v.Lab, v.Fresh = s, lab, true
	} else {
		lab, err := store().Load(target)
		if err != nil {
			return err
		}
		s, err := scenario.Parse(lab.Scenario, []byte(lab.Applied))
		if err != nil {
			return fmt.Errorf("verify: lab %s: its scenario: %w", target, err)
		}
		s.Rename(lab.Name)
		v.Scenario, v.Lab = s, lab
	}
	if len(v.Scenario.Checks) == 0 {
		return fmt.Errorf("verify: %s declares no checks (add a checks: section)", target)
	}
	results := v.Run(ctx)
	if *junit != "" {
		if err := writeJUnit(*junit, v.Scenario.Name, results); err != nil {
			return err
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(results); err != nil {
			return err
		}
	} else {
		writeResults(os.Stdout, v, results)
	}
	for _, r := range results {
		if !r.Passed && !r.Skipped {
			return errExit(1)
		}
	}
	return nil
}

func verifyName(name string) string {
	if len(name) > 33 {
		name = name[:33]
	}
	return name + "-verify"
}

// writeResults prints results for people: a bar per server, predicted and
// observed sequences, ARP replies, and pass or fail per check.
func writeResults(w io.Writer, v *scenario.Verifier, results []scenario.Result) {
	fmt.Fprintf(w, "lab %s (%s)\n", v.Lab.Name, v.Scenario.File)
	passed, failed, skipped := 0, 0, 0
	for _, r := range results {
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
		if r.Kind == "arp" && len(r.Replies) == 0 {
			fmt.Fprintln(w, "  no ARP reply")
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
	XMLName  xml.Name    `xml:"testsuite"`
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     float64     `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name    string        `xml:"name,attr"`
	Class   string        `xml:"classname,attr"`
	Time    float64       `xml:"time,attr"`
	Failure *junitFailure `xml:"failure,omitempty"`
	Skipped *junitFailure `xml:"skipped,omitempty"`
	Out     string        `xml:"system-out,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
}

func writeJUnit(path, lab string, results []scenario.Result) error {
	s := junitSuite{Name: "lvslab verify " + lab, Tests: len(results)}
	var total time.Duration
	for _, r := range results {
		c := junitCase{Name: r.Check, Class: lab, Time: r.Duration.Seconds(), Out: r.What}
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
