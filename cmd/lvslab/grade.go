package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lvslab/lvslab/pkg/grade"
	"github.com/lvslab/lvslab/pkg/sandbox"
	"github.com/lvslab/lvslab/pkg/scenario"
	"github.com/lvslab/lvslab/pkg/verify"
	"github.com/spf13/cobra"
)

// GradeOptions are lvslab grade's.
type GradeOptions struct {
	Scenario    string   // the scenario whose checks grade the labs
	Labs        []string // running labs
	Concurrency int
	CSV, JSON   string // files to write; "" for none
}

func (a *app) gradeCommand() *cobra.Command {
	var o GradeOptions
	c := &cobra.Command{
		Use:   "grade --scenario FILE [--concurrency N] [--csv FILE] [--json FILE] LAB...",
		Short: "grade running labs (a class's) by a scenario's checks: points, hints, CSV and JSON",
		Long: `Run a scenario's checks against running labs, each student's (lvslab up
--name stu01 ...), and score them: each check is worth its points (points:
in the scenario, 1 when not given); a check that fails or cannot be judged
earns none and shows its hint (hint: in the scenario). The scenario's steps are
not run: grading does not change a lab. Labs are graded --concurrency at a
time. A terminal table is printed; --csv and --json write the grades.

Grade by counts (expect: counts) where students will have tried their lab
first: rr's position after unseen traffic is unknown, so a sequence check of
rr or wrr is skipped (no points) on such a lab.`,
		Example: "  lvslab grade --scenario scenarios/nat-rr.yaml --csv grades.csv stu01 stu02 stu03",
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError{errors.New("grade: name the labs to grade")}
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
	grades := grade.All(ctx, o.Labs, o.Concurrency, func(ctx context.Context, name string) (grade.Lab, error) {
		l, err := store().Load(name)
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

func (b *sandboxBackend) Grade(ctx context.Context, _ GradeOptions) error {
	if !sandbox.Running(b.dir) {
		return fmt.Errorf("grade: %w", errNoKernel)
	}
	return b.forward(ctx, false, nil)
}
