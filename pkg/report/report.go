// Package report writes lvslab verify's results as one self-contained HTML
// page: per check, pass or fail, the predicted and observed sequences side by
// side, a bar chart per server (inline SVG), ARP replies with their MACs; the
// steps; then the director's IPVS table and connection table as the run left
// them, and the kernel release. Nothing is loaded from elsewhere: no script,
// no font, no style sheet, no image, so that the file can be mailed, kept as
// a CI artifact, or opened offline in a classroom.
package report

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/lvslab/lvslab/pkg/verify"
)

// Report is what the page shows.
type Report struct {
	Lab      string // the lab's name
	Scenario string // the scenario file
	Kernel   string // the kernel release the lab ran on
	At       time.Time
	Outcomes []verify.Outcome
	Table    string // the director's table as ipvsadm -Ln prints it, at the end
	Conns    string // its connections as ipvsadm -Lnc prints them, at the end
}

//go:embed report.html.tmpl
var files embed.FS

var page = template.Must(template.New("report.html.tmpl").Funcs(template.FuncMap{
	"bars":  bars,
	"pairs": pairs,
	"dur":   func(d time.Duration) string { return d.Round(time.Millisecond).String() },
}).ParseFS(files, "report.html.tmpl"))

// Write writes r as HTML.
func Write(w io.Writer, r Report) error {
	return page.Execute(w, view(r))
}

// group is one step (or the scenario's checks before any step) and its results.
type group struct {
	Title    string
	Outcomes []verify.Outcome
}

type pageData struct {
	Report
	Groups                  []group
	Passed, Failed, Skipped int
	Verdict                 string
}

func view(r Report) pageData {
	d := pageData{Report: r}
	for _, o := range r.Outcomes {
		switch {
		case o.Skipped:
			d.Skipped++
		case o.Passed:
			d.Passed++
		default:
			d.Failed++
		}
		title := o.Step
		if title == "" {
			title = "checks"
		}
		if len(d.Groups) == 0 || d.Groups[len(d.Groups)-1].Title != title {
			d.Groups = append(d.Groups, group{Title: title})
		}
		g := &d.Groups[len(d.Groups)-1]
		g.Outcomes = append(g.Outcomes, o)
	}
	switch {
	case d.Failed > 0:
		d.Verdict = "failed"
	case d.Skipped > 0:
		d.Verdict = "skipped"
	default:
		d.Verdict = "passed"
	}
	return d
}

// pair is one position of a sequence: the predicted and observed server, and
// whether they agree.
type pair struct {
	N                   int
	Predicted, Observed string
	Differ              bool
}

func pairs(o verify.Outcome) []pair {
	n := max(len(o.Predicted), len(o.Observed))
	out := make([]pair, n)
	for i := range n {
		p := pair{N: i + 1}
		if i < len(o.Predicted) {
			p.Predicted = o.Predicted[i]
		}
		if i < len(o.Observed) {
			p.Observed = o.Observed[i]
		}
		p.Differ = len(o.Predicted) > 0 && p.Predicted != p.Observed
		out[i] = p
	}
	return out
}

// The bar chart's measures, in pixels.
const (
	barHeight = 18
	barGap    = 6
	barLabel  = 110
	barWidth  = 320
)

// bars draws a check's counts per server as an inline SVG bar chart, the
// servers in name order.
func bars(counts map[string]int) template.HTML {
	if len(counts) == 0 {
		return ""
	}
	names := make([]string, 0, len(counts))
	most := 0
	for name, n := range counts {
		names = append(names, name)
		most = max(most, n)
	}
	slices.Sort(names)
	h := len(names)*(barHeight+barGap) + barGap
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="bars" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="connections per server">`,
		barLabel+barWidth+60, h, barLabel+barWidth+60, h)
	for i, name := range names {
		y := barGap + i*(barHeight+barGap)
		w := 0
		if most > 0 {
			w = counts[name] * barWidth / most
		}
		fmt.Fprintf(&b, `<text x="0" y="%d">%s</text>`, y+barHeight-5, template.HTMLEscapeString(name))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" rx="3"></rect>`, barLabel, y, w, barHeight)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%d</text>`, barLabel+w+6, y+barHeight-5, counts[name])
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text in it is escaped above
}

// ConnTable writes a connection table as ipvsadm -Lnc prints it.
func ConnTable(conns []verify.Conn) string {
	var b strings.Builder
	b.WriteString("IPVS connection entries\npro expire state       source             virtual            destination\n")
	for _, c := range conns {
		fmt.Fprintf(&b, "%-3s %02d:%02d  %-11s %-18s %-18s %s\n", c.Proto, c.Expires/60, c.Expires%60, c.State, c.Client, c.Virtual, c.Dest)
	}
	return b.String()
}
