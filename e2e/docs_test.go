package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/lvslab/lvslab/internal/clitest"
)

// A guide's console block: "$ lvslab ..." lines, each followed by the output
// it gives (standard output, then standard error, as a terminal shows them).
type guideCommand struct {
	line   int      // where the command is in the guide
	argv   []string // without the leading lvslab
	output []string // the guide's lines
}

// readGuide finds the commands of a guide's ```console blocks.
func readGuide(file string) ([]string, []guideCommand) {
	b, err := os.ReadFile(file)
	Expect(err).NotTo(HaveOccurred())
	lines := strings.Split(string(b), "\n")
	var cmds []guideCommand
	in := false
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "```console"):
			in = true
		case in && strings.HasPrefix(l, "```"):
			in = false
		case in && strings.HasPrefix(l, "$ "):
			words := splitWords(strings.TrimPrefix(l, "$ "))
			Expect(words[0]).To(Equal("lvslab"), "%s:%d: a guide's commands are lvslab's", file, i+1)
			cmds = append(cmds, guideCommand{line: i, argv: words[1:]})
		case in && len(cmds) > 0:
			cmds[len(cmds)-1].output = append(cmds[len(cmds)-1].output, l)
		}
	}
	return lines, cmds
}

// splitWords splits a command line as a shell does for the guides' commands:
// blanks separate words, and single quotes keep a word whole.
func splitWords(s string) []string {
	var words []string
	var w strings.Builder
	quoted, has := false, false
	for _, r := range s {
		switch {
		case r == '\'':
			quoted, has = !quoted, true
		case r == ' ' && !quoted:
			if has {
				words = append(words, w.String())
				w.Reset()
				has = false
			}
		default:
			w.WriteRune(r)
			has = true
		}
	}
	if has {
		words = append(words, w.String())
	}
	return words
}

// What changes from run to run: MAC addresses, timings, a client's ports,
// the connection table's expiry, a capture's timestamps.
var volatile = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b`), "<mac>"},
	{regexp.MustCompile(`(?m)^\d+\.\d{6} `), "<t> "},
	{regexp.MustCompile(`\b\d+(\.\d+)?(µs|ms|s)\b`), "<time>"},
	{regexp.MustCompile(`time=[0-9.]+ (usec|msec|sec)`), "time=<time>"},
	{regexp.MustCompile(`= [0-9./]+ ms`), "= <times> ms"},
	{regexp.MustCompile(`:(102[4-9]|10[3-9]\d|1[1-9]\d\d|[2-9]\d\d\d|[1-6]\d{4})\b`), ":<port>"},
	{regexp.MustCompile(`(?m)^(TCP|UDP|IP) +\d\d:\d\d\b`), "$1 <mm:ss>"}, // ipvsadm -Lnc's expiry (not an address's "12:80")
	{regexp.MustCompile(`pid \d+`), "pid <n>"},
	{regexp.MustCompile(`(?m)\b(REACHABLE|STALE|DELAY|PROBE) *$`), "<nud>"}, // a neighbour entry's state, at a line's end
}

func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

func normalize(lines []string) string {
	s := strings.TrimRight(strings.Join(lines, "\n"), "\n ")
	for _, v := range volatile {
		s = v.re.ReplaceAllString(s, v.with)
	}
	return s
}

// The guides under docs/en and docs/zh, run command by command on a lab of
// their own: each command's output must be what the guide shows, but for
// what changes from run to run. LVSLAB_DOCS_UPDATE=1 writes the outputs of
// this run into the guides instead:
// LVSLAB_DOCS_UPDATE=1 make e2e LABELS=docs.
var _ = Describe("The guides", Label("docs"), func() {
	root, err := clitest.Repo()
	if err != nil {
		panic(err)
	}
	guides, _ := filepath.Glob(filepath.Join(root, "docs", "*", "*.md"))
	// The guides of one scenario in each language type the same commands: one
	// run of them is compared with each.
	byName := map[string][]string{}
	var names []string
	for _, g := range guides {
		n := filepath.Base(g)
		if byName[n] == nil {
			names = append(names, n)
		}
		byName[n] = append(byName[n], g)
	}
	// Every other guide is labelled docs1, the rest docs2, so that make e2e
	// runs half of them in each of its two sandbox kernels.
	var entries []TableEntry
	for i, n := range names {
		entries = append(entries, Entry(n, Label(fmt.Sprintf("docs%d", i%2+1)), byName[n]))
	}
	DescribeTable("show what lvslab prints for each of their commands",
		func(files []string) {
			type guide struct {
				file  string
				lines []string
				cmds  []guideCommand
			}
			var gs []guide
			for _, f := range files {
				lines, cmds := readGuide(f)
				Expect(cmds).NotTo(BeEmpty(), "%s has no console block", f)
				gs = append(gs, guide{f, lines, cmds})
			}
			for _, g := range gs[1:] {
				Expect(len(g.cmds)).To(Equal(len(gs[0].cmds)), "%s and %s type different commands", g.file, gs[0].file)
				for i := range g.cmds {
					Expect(g.cmds[i].argv).To(Equal(gs[0].cmds[i].argv), "%s:%d and %s:%d", g.file, g.cmds[i].line+1, gs[0].file, gs[0].cmds[i].line+1)
				}
			}
			update := os.Getenv("LVSLAB_DOCS_UPDATE") != ""
			DeferCleanup(func() {
				// A guide brings its lab up and takes it down; a failed one may not have.
				for _, c := range gs[0].cmds {
					if c.argv[0] == "up" {
						for i, a := range c.argv {
							if a == "--name" && i+1 < len(c.argv) {
								lv("down", c.argv[i+1])
							}
						}
					}
				}
			})
			outputs := make([][]string, len(gs[0].cmds))
			for k, c := range gs[0].cmds {
				stdout, stderr, code := lv(c.argv...)
				Expect(code).To(BeNumerically("<", 64), "%s:%d: %s", gs[0].file, c.line+1, strings.Join(c.argv, " "))
				if stdout+stderr != "" {
					outputs[k] = strings.Split(strings.TrimRight(stdout+stderr, "\n"), "\n")
				}
				if update {
					continue
				}
				for _, g := range gs {
					want, have := normalize(g.cmds[k].output), normalize(outputs[k])
					// A capture's replies come in any order, and ipvsadm -Lnc
					// lists the connection table in its hash order.
					if c.argv[0] == "capture" || slices.Contains(c.argv, "-Lnc") {
						want, have = sortedLines(want), sortedLines(have)
					}
					Expect(have).To(Equal(want), "%s:%d: lvslab %s", g.file, g.cmds[k].line+1, strings.Join(c.argv, " "))
				}
			}
			if !update {
				return
			}
			for _, g := range gs {
				var out []string
				last := 0
				for k, c := range g.cmds {
					out = append(out, g.lines[last:c.line+1]...)
					out = append(out, outputs[k]...)
					last = c.line + 1 + len(c.output)
				}
				out = append(out, g.lines[last:]...)
				Expect(os.WriteFile(g.file, []byte(strings.Join(out, "\n")), 0o644)).To(Succeed())
				fmt.Fprintf(GinkgoWriter, "%s: %d outputs written\n", g.file, len(g.cmds))
			}
		},
		entries,
	)
})
