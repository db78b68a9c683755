package keepalived

import (
	"errors"
	"fmt"
	"strings"
)

// stmt is one keyword with its values and, for a block, the statements
// inside its braces.
type stmt struct {
	line     int
	key      string
	args     []string
	hasBlock bool
	block    []*stmt
}

// token is a word, a quoted string or a brace.
type token struct {
	text   string
	quoted bool
}

func (t token) is(brace string) bool { return !t.quoted && t.text == brace }

// tokenize splits one line into tokens; a comment ends the line.
func tokenize(line string) ([]token, error) {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '!' || c == '#':
			return toks, nil
		case c == '{' || c == '}':
			toks = append(toks, token{text: string(c)})
			i++
		case c == '"':
			var b strings.Builder
			i++
			for {
				if i >= len(line) {
					return nil, errors.New("unterminated quoted string (a closing \" is missing)")
				}
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					b.WriteByte(line[i+1])
					i += 2
					continue
				}
				if line[i] == '"' {
					i++
					break
				}
				b.WriteByte(line[i])
				i++
			}
			toks = append(toks, token{text: b.String(), quoted: true})
		default:
			j := i
			for j < len(line) && !strings.ContainsRune(" \t\r{}\"", rune(line[j])) {
				j++
			}
			toks = append(toks, token{text: line[i:j]})
			i = j
		}
	}
	return toks, nil
}

// parseTree reads the file into statements. A '{' opens the block of the
// keyword before it (on its line, or alone on the next line); a '}' closes the
// innermost open block.
func parseTree(file string, data []byte) ([]*stmt, error) {
	root := &stmt{hasBlock: true}
	stack := []*stmt{root}
	fail := func(line int, f string, a ...any) error {
		return &Error{File: file, Line: line, Err: fmt.Errorf(f, a...)}
	}
	for i, text := range strings.Split(string(data), "\n") {
		n := i + 1
		toks, err := tokenize(text)
		if err != nil {
			return nil, &Error{File: file, Line: n, Err: err}
		}
		var cur *stmt
		for _, t := range toks {
			parent := stack[len(stack)-1]
			switch {
			case t.is("{"):
				if cur == nil {
					// "{" alone on the line after its keyword.
					if k := len(parent.block); k > 0 && !parent.block[k-1].hasBlock && parent.block[k-1].line == n-1 {
						cur = parent.block[k-1]
					} else {
						return nil, fail(n, "'{' without a keyword before it")
					}
				}
				cur.hasBlock = true
				stack = append(stack, cur)
				cur = nil
			case t.is("}"):
				if len(stack) == 1 {
					return nil, fail(n, "'}' closes no block")
				}
				stack = stack[:len(stack)-1]
				cur = nil
			case cur == nil:
				cur = &stmt{line: n, key: t.text}
				parent.block = append(parent.block, cur)
			default:
				cur.args = append(cur.args, t.text)
			}
		}
	}
	if len(stack) > 1 {
		open := stack[len(stack)-1]
		return nil, fail(open.line, "%s: block opened on this line is not closed (a '}' is missing)", open.key)
	}
	return root.block, nil
}

// quote writes a value so tokenize reads it back as one token.
func quote(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\r\n{}\"!#\\") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
