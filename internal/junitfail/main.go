// Command junitfail prints the failed test cases of JUnit reports, one short
// paragraph each: make e2e runs it last when the suite fails, so that the end
// of a CI log (often all of it that is kept) says what failed and why, not
// only where.
package main

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// report is the part of a JUnit report read here (Ginkgo writes testsuites).
type report struct {
	Suites []struct {
		Cases []struct {
			Name    string `xml:"name,attr"`
			Failure *struct {
				Message string `xml:"message,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// ansi matches a colour code, raw or as an XML character reference.
var ansi = regexp.MustCompile(`(\x1b|&#x1[bB];|&#27;)\[[0-9;]*m`)

// maxLen bounds what is printed of one failure's message.
const maxLen = 1200

func main() {
	if printFailures(os.Stdout, os.Args[1:]) == 0 {
		fmt.Println("junitfail: no failed test case in the reports")
	}
}

// printFailures writes each failed test case of the reports to w and returns
// how many there were; a report it cannot read is named on stderr.
func printFailures(w io.Writer, files []string) int {
	failed := 0
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "junitfail: %v\n", err)
			continue
		}
		// Colour codes are not XML characters: drop them first.
		b = ansi.ReplaceAll(b, nil)
		var r report
		if err := xml.Unmarshal(b, &r); err != nil {
			fmt.Fprintf(os.Stderr, "junitfail: %s: %v\n", file, err)
			continue
		}
		for _, s := range r.Suites {
			for _, c := range s.Cases {
				msg := ""
				switch {
				case c.Failure != nil:
					msg = c.Failure.Message
					if msg == "" {
						msg = c.Failure.Text
					}
				case c.Error != nil:
					msg = c.Error.Message
				default:
					continue
				}
				failed++
				msg = strings.TrimSpace(msg)
				if len(msg) > maxLen {
					msg = msg[:maxLen] + " ..."
				}
				fmt.Fprintf(w, "FAILED %s\n  %s\n", c.Name, strings.ReplaceAll(msg, "\n", "\n  "))
			}
		}
	}
	return failed
}
