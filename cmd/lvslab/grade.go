package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/grade"
	"github.com/lvslab/lvslab/pkg/ipvsadm"
	"github.com/lvslab/lvslab/pkg/keepalived"
	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/spf13/cobra"
)

// GradeOptions are lvslab grade's.
type GradeOptions struct {
	Scenario string   // the scenario whose checks grade the labs
	Labs     []string // running labs
	// Rules is a directory of students' director tables, each file one
	// student's: ipvsadm-save output (*.rules, *.txt) or a keepalived.conf
	// (*.conf). Each is applied to a fresh lab of the scenario, graded, and
	// the lab removed.
	Rules       string
	Concurrency int
	CSV, JSON   string // files to write; "" for none
}

func (a *app) gradeCommand() *cobra.Command {
	var o GradeOptions
	c := &cobra.Command{
		Use:   "grade --scenario FILE [--concurrency N] [--csv FILE] [--json FILE] LAB... | --rules DIR",
		Short: "grade running labs (a class's) by a scenario's checks: points, hints, CSV and JSON",
		Long: `Run a scenario's checks against running labs, each student's (lvslab up
--name stu01 ...), and score them: each check is worth its points (points:
in the scenario, 1 when not given); a check that fails or cannot be judged
earns none and shows its hint (hint: in the scenario). The scenario's steps are
not run: grading does not change a lab. Labs are graded --concurrency at a
time. A terminal table is printed; --csv and --json write the grades.

With --rules DIR, the students hand in their director's table instead: each
file of DIR is one student's, named by the file, either ipvsadm-save -n
output (*.rules, *.txt) or a keepalived.conf (*.conf; its virtual_server
blocks). lvslab builds a fresh lab of the scenario for each, with that table
on the director, grades it and removes it. A file that cannot be read is that
student's error, naming the file and the line.

Grade by counts (expect: counts) where students will have tried their lab
first: rr's position after unseen traffic is unknown, so a sequence check of
rr or wrr is skipped (no points) on such a lab.`,
		Example: "  lvslab grade --scenario scenarios/nat-rr.yaml --csv grades.csv stu01 stu02 stu03",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && !cmd.Flags().Changed("rules") {
				return usageError{errors.New("grade: name the labs to grade, or give --rules DIR")}
			}
			if len(args) > 0 && cmd.Flags().Changed("rules") {
				return usageError{errors.New("grade: give running labs or --rules DIR, not both")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Scenario == "" {
				return usageError{errors.New("grade: --scenario is required")}
			}
			if o.Concurrency < 1 {
				return usageError{fmt.Errorf("--concurrency %d: give 1 or more", o.Concurrency)}
			}
			s, err := scenario.Load(o.Scenario)
			if err != nil {
				return err
			}
			if len(s.Checks) == 0 {
				return fmt.Errorf("grade: %s declares no checks", o.Scenario)
			}
			o.Labs = args
			return a.backend.Grade(cmd.Context(), o)
		},
	}
	c.Flags().StringVar(&o.Scenario, "scenario", "", "the scenario whose checks grade the labs")
	c.Flags().IntVar(&o.Concurrency, "concurrency", 4, "labs graded at once")
	c.Flags().StringVar(&o.CSV, "csv", "", "write the grades as CSV (a row per lab and check)")
	c.Flags().StringVar(&o.JSON, "json", "", "write the grades as JSON")
	c.Flags().StringVar(&o.Rules, "rules", "", "grade students' director tables (ipvsadm-save output, keepalived.conf) from this directory, each on a fresh lab")
	return labCommand(c)
}

func (b *localBackend) Grade(ctx context.Context, o GradeOptions) error {
	s, err := scenario.Load(o.Scenario)
	if err != nil {
		return err
	}
	k, err := verify.RunningKernel()
	if err != nil {
		return err
	}
	start := time.Now()
	labOf := map[string]string{} // a student's name: the fresh lab of their table
	if o.Rules != "" {
		students, cleanup, err := b.rulesLabs(ctx, s, o.Rules, labOf)
		defer cleanup()
		if err != nil {
			return err
		}
		o.Labs = students
	}
	pr := newProgress(b.app.stderr)
	pr.begin(fmt.Sprintf("grading %d labs, %d at a time", len(o.Labs), o.Concurrency))
	grades := grade.All(ctx, o.Labs, o.Concurrency, func(ctx context.Context, name string) (grade.Lab, error) {
		if e, bad := labOf[name]; bad && strings.HasPrefix(e, "error: ") {
			return grade.Lab{}, errors.New(strings.TrimPrefix(e, "error: "))
		}
		labName := name
		if l, ok := labOf[name]; ok {
			labName = l
		}
		l, err := store().Load(labName)
		if err != nil {
			return grade.Lab{}, err
		}
		spec := s.Spec.Clone()
		j := &verify.Judge{Spec: &spec, Checks: s.Checks, Nodes: l.Handles(), Lab: l.Name, Director: l.Director, Kernel: k}
		if j.Director == "" {
			j.Director = spec.Director()
		}
		return grade.Score(name, s.Checks, j.Run(ctx)), nil
	})
	pr.clear()
	if err := grade.WriteTable(b.app.stdout, grades, s.Checks); err != nil {
		return err
	}
	b.app.logf("%d labs graded in %v (%d at a time)\n", len(grades), time.Since(start).Round(time.Millisecond), o.Concurrency)
	write := func(file string, f func(*bytes.Buffer) error) error {
		if file == "" {
			return nil
		}
		var buf bytes.Buffer
		if err := f(&buf); err != nil {
			return err
		}
		return os.WriteFile(file, buf.Bytes(), 0o644)
	}
	if err := write(o.CSV, func(w *bytes.Buffer) error { return grade.WriteCSV(w, grades) }); err != nil {
		return err
	}
	return write(o.JSON, func(w *bytes.Buffer) error { return grade.WriteJSON(w, grades) })
}

// rulesLabs brings up a fresh lab of s for each student's table in dir and
// returns the students' names; labOf maps each to its lab, or to "error: "
// and why its table could not be used. cleanup removes the labs.
func (b *localBackend) rulesLabs(ctx context.Context, s *scenario.Scenario, dir string, labOf map[string]string) ([]string, func(), error) {
	var labs []string
	cleanup := func() {}
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, cleanup, err
	}
	r, err := b.runner(ctx, true)
	if err != nil {
		return nil, cleanup, err
	}
	cleanup = func() {
		for _, l := range labs {
			_ = r.Down(context.WithoutCancel(ctx), l)
		}
	}
	director := s.Spec.Director()
	if director == "" {
		return nil, cleanup, fmt.Errorf("grade: %s has no director to give the students' tables to", s.File)
	}
	var students []string
	for i, f := range files {
		ext := filepath.Ext(f.Name())
		if f.IsDir() || (ext != ".rules" && ext != ".txt" && ext != ".conf") {
			continue
		}
		student := strings.TrimSuffix(f.Name(), ext)
		students = append(students, student)
		file := filepath.Join(dir, f.Name())
		svcs, err := studentTable(file)
		if err != nil {
			labOf[student] = "error: " + err.Error()
			continue
		}
		st, err := scenario.Load(s.File)
		if err != nil {
			return nil, cleanup, err
		}
		st.Spec.SetServices(director, svcs)
		name := fmt.Sprintf("grade-%d", i)
		if err := st.Rename(name); err != nil {
			return nil, cleanup, err
		}
		if _, err := r.Up(ctx, st); err != nil {
			labOf[student] = "error: " + f.Name() + ": " + err.Error()
			continue
		}
		labs = append(labs, name)
		labOf[student] = name
	}
	return students, cleanup, nil
}

// studentTable reads a student's director table: ipvsadm-save output, or a
// keepalived.conf's virtual servers.
func studentTable(file string) ([]lab.Service, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if filepath.Ext(file) == ".conf" {
		c, err := keepalived.Parse(filepath.Base(file), data)
		if err != nil {
			return nil, err
		}
		var svcs []lab.Service
		for _, vs := range c.VirtualServers {
			svcs = append(svcs, vs.Service)
		}
		if len(svcs) == 0 {
			return nil, fmt.Errorf("%s: no virtual_server", filepath.Base(file))
		}
		return svcs, nil
	}
	var t ipvsadm.Rules
	n := 0
	for l := range strings.Lines(string(data)) {
		n++
		if l = strings.TrimSpace(l); l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		r, err := ipvsadm.ParseRule(l)
		if err == nil {
			err = t.Exec(r)
		}
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %q: %w", filepath.Base(file), n, l, err)
		}
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("%s: no rule (ipvsadm-save -n output is expected)", filepath.Base(file))
	}
	return t, nil
}

func (b *sandboxBackend) Grade(ctx context.Context, _ GradeOptions) error {
	if !sandbox.Running(b.dir) {
		return fmt.Errorf("grade: %w", errNoKernel)
	}
	return b.forward(ctx, false, nil)
}
