package graph

import (
	"cmp"
	"fmt"
	"html"
	"io"
	"slices"
	"strings"
)

// Format is an output format of the picture.
type Format string

// The formats graph writes.
const (
	Mermaid Format = "mermaid"
	Dot     Format = "dot"
	SVG     Format = "svg"
)

// Formats lists the formats, for flags and errors.
var Formats = []Format{Mermaid, Dot, SVG}

// Write writes g in format f.
func (g *Graph) Write(w io.Writer, f Format) error {
	switch f {
	case Mermaid:
		return g.WriteMermaid(w)
	case Dot:
		return g.WriteDot(w)
	case SVG:
		return g.WriteSVG(w)
	}
	return fmt.Errorf("format %q: want mermaid, dot or svg", f)
}

// id is a node's Mermaid identifier: letters, digits and _ only.
func id(name string) string {
	var b strings.Builder
	b.WriteString("n_")
	for _, r := range name {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "_%x_", r)
		}
	}
	return b.String()
}

// mermaidText escapes a label for a quoted Mermaid string.
func mermaidText(s string) string {
	return strings.NewReplacer(`"`, "#quot;", "<", "#lt;", ">", "#gt;").Replace(s)
}

// WriteMermaid writes g as a Mermaid flowchart, left to right.
func (g *Graph) WriteMermaid(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "---\ntitle: %s\n---\nflowchart LR\n", mermaidText(g.Name))
	for _, n := range g.Nodes {
		label := "<b>" + mermaidText(n.Name) + "</b>" + mermaidText(n.roleNote())
		for _, l := range n.Lines {
			label += "<br/>" + mermaidText(l)
		}
		if n.Role == RoleBridge {
			fmt.Fprintf(&b, "  %s([\"%s\"])\n", id(n.Name), label)
		} else {
			fmt.Fprintf(&b, "  %s[\"%s\"]\n", id(n.Name), label)
		}
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s ---|\"%s — %s\"| %s\n", id(e.A), mermaidText(e.AIface), mermaidText(e.BIface), id(e.B))
	}
	for _, c := range []struct {
		role  Role
		style string
	}{{RoleClient, "fill:#fff7d6,stroke:#b08900"}, {RoleDirector, "fill:#dbeafe,stroke:#1d4ed8"},
		{RoleRealServer, "fill:#dcfce7,stroke:#15803d"}, {RoleBridge, "fill:#f1f5f9,stroke:#64748b"}} {
		var ids []string
		for _, n := range g.Nodes {
			if n.Role == c.role {
				ids = append(ids, id(n.Name))
			}
		}
		if len(ids) > 0 {
			name := strings.ReplaceAll(string(c.role), " ", "")
			fmt.Fprintf(&b, "  classDef %s %s\n  class %s %s\n", name, c.style, strings.Join(ids, ","), name)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// roleNote is " (role)" after a node's name, where the name does not say it.
func (n Node) roleNote() string {
	if n.Role == RoleBridge || n.Role == RoleHost || n.Name == string(n.Role) {
		return ""
	}
	return " (" + string(n.Role) + ")"
}

// dotText quotes s for Graphviz.
func dotText(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// WriteDot writes g as a Graphviz graph, left to right, for dot -Tsvg.
func (g *Graph) WriteDot(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "graph %s {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"monospace\", fontsize=10];\n  edge [fontname=\"monospace\", fontsize=9];\n", dotText(g.Name))
	fill := map[Role]string{RoleClient: "#fff7d6", RoleDirector: "#dbeafe", RoleRealServer: "#dcfce7", RoleBridge: "#f1f5f9", RoleHost: "#ffffff"}
	for _, n := range g.Nodes {
		label := n.Name + n.roleNote()
		for _, l := range n.Lines {
			label += "\n" + l
		}
		shape := ""
		if n.Role == RoleBridge {
			shape = ", shape=ellipse"
		}
		fmt.Fprintf(&b, "  %s [label=%s, fillcolor=%s%s];\n", dotText(n.Name), dotText(label), dotText(fill[n.Role]), shape)
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %s -- %s [taillabel=%s, headlabel=%s];\n", dotText(e.A), dotText(e.B), dotText(e.AIface), dotText(e.BIface))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// The SVG layout's measures, in pixels (a monospace font's advance is about
// 0.6 of its size).
const (
	fontSize   = 12
	charWidth  = 7.3
	lineHeight = 16
	padX       = 10
	padY       = 8
	gapX       = 90
	gapY       = 28
	margin     = 20
	portGap    = 22 // between two links meeting one side of a box
)

type box struct {
	x, y, w, h float64
}

// WriteSVG writes g as a self-contained SVG picture (no font or style from
// outside): one column per layer, links as lines labelled with their
// interfaces, each link meeting a box at a point of its own.
func (g *Graph) WriteSVG(w io.Writer) error {
	layers := 0
	for _, n := range g.Nodes {
		layers = max(layers, n.Layer+1)
	}
	// A box is as tall as its text, or as its links need (a bridge's ports).
	links := map[string]int{}
	for _, e := range g.Edges {
		links[e.A]++
		links[e.B]++
	}
	size := map[string]box{}
	colW := make([]float64, layers)
	colH := make([]float64, layers)
	for _, n := range g.Nodes {
		text := len(n.Name + n.roleNote())
		for _, l := range n.Lines {
			text = max(text, len(l))
		}
		b := box{w: float64(text)*charWidth + 2*padX, h: float64(1+len(n.Lines))*lineHeight + 2*padY}
		b.h = max(b.h, float64(links[n.Name])*portGap+padY)
		size[n.Name] = b
		colW[n.Layer] = max(colW[n.Layer], b.w)
		if colH[n.Layer] > 0 {
			colH[n.Layer] += gapY
		}
		colH[n.Layer] += b.h
	}
	height := 0.0
	for _, h := range colH {
		height = max(height, h)
	}
	x := float64(margin)
	colX := make([]float64, layers)
	for i := range layers {
		colX[i] = x
		x += colW[i] + gapX
	}
	width := x - gapX + margin
	next := make([]float64, layers)
	for i := range layers {
		next[i] = margin + 20 + (height-colH[i])/2
	}
	for _, n := range g.Nodes {
		b := size[n.Name]
		b.x = colX[n.Layer] + (colW[n.Layer]-b.w)/2
		b.y = next[n.Layer]
		next[n.Layer] += b.h + gapY
		size[n.Name] = b
	}

	// Where each link meets each of its boxes: on the side facing the other
	// end (the right side for both ends within one column), the links of one
	// side spread over it in the order of their other ends' heights.
	type end struct {
		edge  int
		node  string
		right bool
		other float64 // the other end's centre, top to bottom
	}
	sides := map[string][]end{}
	layerOf := map[string]int{}
	for _, n := range g.Nodes {
		layerOf[n.Name] = n.Layer
	}
	for i, e := range g.Edges {
		a, b := size[e.A], size[e.B]
		la, lb := layerOf[e.A], layerOf[e.B]
		aRight, bRight := la < lb, lb < la
		if la == lb {
			aRight, bRight = true, true
		}
		sides[fmt.Sprint(e.A, aRight)] = append(sides[fmt.Sprint(e.A, aRight)], end{i, e.A, aRight, b.y + b.h/2})
		sides[fmt.Sprint(e.B, bRight)] = append(sides[fmt.Sprint(e.B, bRight)], end{i, e.B, bRight, a.y + a.h/2})
	}
	type point struct{ x, y float64 }
	at := map[[2]int]point{} // (edge, 0 for A or 1 for B)
	for _, ends := range sides {
		slices.SortStableFunc(ends, func(p, q end) int { return cmp.Compare(p.other, q.other) })
		for k, en := range ends {
			b := size[en.node]
			px := b.x
			if en.right {
				px = b.x + b.w
			}
			py := b.y + b.h*float64(k+1)/float64(len(ends)+1)
			which := 0 // the link's A end, or its B end
			if g.Edges[en.edge].A != en.node {
				which = 1
			}
			at[[2]int{en.edge, which}] = point{px, py}
		}
	}

	var s strings.Builder
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="monospace" font-size="%d">`+"\n",
		width, height+2*margin+20, width, height+2*margin+20, fontSize)
	fmt.Fprintf(&s, `<title>%s</title>`+"\n", html.EscapeString(g.Name))
	fmt.Fprintf(&s, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&s, `<text x="%d" y="%d" font-weight="bold">%s</text>`+"\n", margin, margin+4, html.EscapeString(g.Name))
	label := func(p point, toRight bool, text string) {
		anchor, dx := "start", 4.0
		if !toRight {
			anchor, dx = "end", -4
		}
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="10" fill="#334155">%s</text>`+"\n", p.x+dx, p.y-4, anchor, html.EscapeString(text))
	}
	for i, e := range g.Edges {
		a, b := at[[2]int{i, 0}], at[[2]int{i, 1}]
		if layerOf[e.A] == layerOf[e.B] {
			c := max(a.x, b.x) + 40
			fmt.Fprintf(&s, `<path d="M%.1f %.1f C%.1f %.1f %.1f %.1f %.1f %.1f" fill="none" stroke="#475569" stroke-width="1.5"/>`+"\n", a.x, a.y, c, a.y, c, b.y, b.x, b.y)
			label(a, true, e.AIface)
			label(b, true, e.BIface)
			continue
		}
		fmt.Fprintf(&s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#475569" stroke-width="1.5"/>`+"\n", a.x, a.y, b.x, b.y)
		label(a, a.x < b.x, e.AIface)
		label(b, b.x < a.x, e.BIface)
	}
	style := map[Role][2]string{RoleClient: {"#fff7d6", "#b08900"}, RoleDirector: {"#dbeafe", "#1d4ed8"},
		RoleRealServer: {"#dcfce7", "#15803d"}, RoleBridge: {"#f1f5f9", "#64748b"}, RoleHost: {"#ffffff", "#334155"}}
	for _, n := range g.Nodes {
		b := size[n.Name]
		st := style[n.Role]
		rx := 6.0
		if n.Role == RoleBridge {
			rx = min(b.h, b.w) / 2
		}
		fmt.Fprintf(&s, `<g><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" rx="%.1f" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n", b.x, b.y, b.w, b.h, rx, st[0], st[1])
		title := n.Name + n.roleNote()
		ty := b.y + padY + fontSize
		if len(n.Lines) == 0 {
			ty = b.y + b.h/2 + fontSize/2 - 2 // a name alone, in the middle
		}
		fmt.Fprintf(&s, `<text x="%.1f" y="%.1f" font-weight="bold">%s</text>`+"\n", b.x+padX, ty, html.EscapeString(title))
		for i, l := range n.Lines {
			fmt.Fprintf(&s, `<text x="%.1f" y="%.1f">%s</text>`+"\n", b.x+padX, ty+float64(i+1)*lineHeight, html.EscapeString(l))
		}
		s.WriteString("</g>\n")
	}
	s.WriteString("</svg>\n")
	_, err := io.WriteString(w, s.String())
	return err
}
