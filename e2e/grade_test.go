package e2e

import (
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// A small class: five students' labs of scenarios/nat-rr.yaml, two of them
// wrong on purpose and one never brought up, graded by
// e2e/testdata/grade-nat-rr.yaml. The CSV is compared whole, but for the
// failure messages (the kernel's words).
var _ = Describe("lvslab grade", Label("grade", "nat"), func() {
	It("grades a class's labs concurrently: points per check, hints for the failed ones, CSV, JSON and a table", func() {
		for _, stu := range []string{"stu01", "stu02", "stu03", "stu04"} {
			up("scenarios/nat-rr.yaml", stu)
		}
		// stu02 chose source hashing; stu04 forgot web2.
		_, stderr, code := lv("exec", "--lab", "stu02", "director", "--", "ipvsadm", "-E", "-t", "203.0.113.1:80", "-s", "sh")
		Expect(code).To(Equal(0), stderr)
		_, stderr, code = lv("exec", "--lab", "stu04", "director", "--", "ipvsadm", "-d", "-t", "203.0.113.1:80", "-r", "198.51.100.12:80")
		Expect(code).To(Equal(0), stderr)

		dir := GinkgoT().TempDir()
		csvFile, jsonFile := filepath.Join(dir, "grades.csv"), filepath.Join(dir, "grades.json")
		out, stderr, code := lv("grade", "--scenario", "e2e/testdata/grade-nat-rr.yaml", "--concurrency", "3",
			"--csv", csvFile, "--json", jsonFile, "stu01", "stu02", "stu03", "stu04", "stu05")
		Expect(code).To(Equal(0), stderr)
		Expect(stderr).To(MatchRegexp(`5 labs graded in [0-9.]+m?s \(3 at a time\)`))
		Expect(out).To(MatchRegexp(`stu01 +✓ 2 +✓ 1 +✓ 1 +4/4`))
		Expect(out).To(MatchRegexp(`stu02 +✗ 0 +✓ 1 +✗ 0 +1/4`))
		Expect(out).To(MatchRegexp(`stu05 +error: `))
		Expect(out).To(ContainSubstring("stu04: ten requests are shared five and five: both web servers must be in the service"))

		f, err := os.Open(csvFile)
		Expect(err).NotTo(HaveOccurred())
		defer f.Close()
		rows, err := csv.NewReader(f).ReadAll()
		Expect(err).NotTo(HaveOccurred())
		var got []string
		for _, r := range rows {
			Expect(r).To(HaveLen(8))
			got = append(got, strings.Join(append(r[:6:6], r[7]), ","))
		}
		rr := "the scheduler must be rr (ipvsadm -E -t 203.0.113.1:80 -s rr)"
		both := "both web servers must be in the service, each with weight 1 (ipvsadm -a -t 203.0.113.1:80 -r 198.51.100.1x:80 -m -w 1), and the scheduler must be rr"
		Expect(got).To(Equal([]string{
			"lab,check,points,max,passed,skipped,hint",
			"stu01,ten requests are shared five and five,2,2,true,false,",
			"stu01,the director answers ARP for the VIP,1,1,true,false,",
			"stu01,the next four go round robin's way,1,1,true,false,",
			"stu02,ten requests are shared five and five,0,2,false,false," + both,
			"stu02,the director answers ARP for the VIP,1,1,true,false,",
			"stu02,the next four go round robin's way,0,1,false,false," + rr,
			"stu03,ten requests are shared five and five,2,2,true,false,",
			"stu03,the director answers ARP for the VIP,1,1,true,false,",
			"stu03,the next four go round robin's way,1,1,true,false,",
			"stu04,ten requests are shared five and five,0,2,false,false," + both,
			"stu04,the director answers ARP for the VIP,1,1,true,false,",
			"stu04,the next four go round robin's way,1,1,true,false,", // round robin over what is there
			"stu05,,0,0,false,false,",
		}))
		b, err := os.ReadFile(jsonFile)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(b)).To(MatchRegexp(`"lab": "stu01",\s+"points": 4,\s+"max": 4`))
		AddReportEntry("grading", regexp.MustCompile(`\d+ labs graded in \S+ \(\d+ at a time\)`).FindString(stderr))
		fmt.Fprintln(GinkgoWriter, out)
	})

	It("grades students' director tables (ipvsadm-save output, keepalived.conf), each on a fresh lab it removes again", func() {
		dir := GinkgoT().TempDir()
		files := map[string]string{
			"ann.rules": "-A -t 203.0.113.1:80 -s rr\n-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 1\n-a -t 203.0.113.1:80 -r 198.51.100.12:80 -m -w 1\n",
			"bob.rules": "# bob's table\n-A -t 203.0.113.1:80 -s sh\n-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 1\n-a -t 203.0.113.1:80 -r 198.51.100.12:80 -m -w 1\n",
			"cat.conf":  "virtual_server 203.0.113.1 80 {\n    lb_algo rr\n    lb_kind NAT\n    protocol TCP\n    real_server 198.51.100.11 80 {\n        weight 1\n    }\n    real_server 198.51.100.12 80 {\n        weight 1\n    }\n}\n",
			"dan.rules": "-A -t 203.0.113.1:80 -s rr\n-a -t 203.0.113.1:80 -r 198.51.100.11:80 -m -w 70000\n",
			"notes.md":  "not a table",
		}
		for name, text := range files {
			Expect(os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644)).To(Succeed())
		}
		out, stderr, code := lv("grade", "--scenario", "e2e/testdata/grade-nat-rr.yaml", "--rules", dir)
		Expect(code).To(Equal(0), stderr)
		Expect(out).To(MatchRegexp(`ann +✓ 2 +✓ 1 +✓ 1 +4/4`))
		Expect(out).To(MatchRegexp(`bob +✗ 0 +✓ 1 +✗ 0 +1/4`))
		Expect(out).To(MatchRegexp(`cat +✓ 2 +✓ 1 +✓ 1 +4/4`))
		Expect(out).To(MatchRegexp(`dan +error: dan\.rules:2: "-a -t 203\.0\.113\.1:80 -r 198\.51\.100\.11:80 -m -w 70000": `))
		Expect(out).NotTo(ContainSubstring("notes"))
		Expect(stderr).To(ContainSubstring("4 labs graded in"))
		labs, _, _ := lv("status")
		Expect(labs).NotTo(ContainSubstring("grade-")) // every fresh lab removed
	})
})
