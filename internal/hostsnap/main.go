// Command hostsnap prints a canonical snapshot of the network namespace it runs in:
// links, addresses, routes of every table, policy rules, the sysctls under
// /proc/sys/net, the nft ruleset, iptables rules (legacy and nft) and the entries of
// /run/netns. Two snapshots taken before and after a test run are equal when the
// run left the host's network alone:
//
//	go run ./internal/hostsnap > before.txt
//	... the test run ...
//	go run ./internal/hostsnap > after.txt && diff -u before.txt after.txt
//
// It only reads: iptables-legacy is asked only about tables that already exist
// (listing another would create it), and nothing under /run/lvslab is read.
// Values that change on their own (counters, lifetimes) are left out. The exit
// status is 1 when a part could not be read; that part says why.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

func main() {
	sections, err := snapshot()
	if werr := Write(os.Stdout, sections); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hostsnap:", err)
		os.Exit(1)
	}
}

// snapshot reads every part; a part that fails says so in its section, and the
// error is returned too.
func snapshot() ([]Section, error) {
	var errs []error
	part := func(name string, sorted bool, read func() ([]string, error)) Section {
		lines, err := read()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			lines = append(lines, "error: "+err.Error())
		}
		return Section{Name: name, Lines: lines, Sorted: sorted}
	}
	links, err := linkNames()
	if err != nil {
		errs = append(errs, fmt.Errorf("links: %w", err))
	}
	sections := []Section{
		part("links", true, func() ([]string, error) { return linkLines(links) }),
		part("addresses", true, func() ([]string, error) { return addrLines(links) }),
		part("routes", true, func() ([]string, error) { return routeLines(links) }),
		part("rules", true, ruleLines),
		part("sysctls", true, sysctlLines),
		part("nft", false, nftLines),
	}
	for _, cmd := range []string{"iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft"} {
		for _, table := range xtTables(cmd) {
			sections = append(sections, part(cmd+" -t "+table+" -S", false, func() ([]string, error) {
				return run(cmd, "-t", table, "-S")
			}))
		}
	}
	sections = append(sections, part("/run/netns", true, netnsLines))
	return sections, errors.Join(errs...)
}

func linkNames() (map[int]string, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

func linkLines(names map[int]string) ([]string, error) {
	ls, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range ls {
		lines = append(lines, FormatLink(l, names))
	}
	return lines, nil
}

func addrLines(links map[int]string) ([]string, error) {
	as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, a := range as {
		lines = append(lines, FormatAddr(a, links))
	}
	return lines, nil
}

// routeLines lists the routes of every table (RT_FILTER_TABLE with no table), IPv4
// and IPv6; the kernel's cached clones are not routes anyone added.
func routeLines(links map[int]string) ([]string, error) {
	var lines []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RouteListFiltered(fam, &netlink.Route{}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return lines, err
		}
		for _, r := range rs {
			lines = append(lines, FormatRoute(r, links))
		}
	}
	return lines, nil
}

func ruleLines() ([]string, error) {
	var lines []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleList(fam)
		if err != nil {
			return lines, err
		}
		for _, r := range rs {
			lines = append(lines, FormatRule(r))
		}
	}
	return lines, nil
}

// sysctlLines reads every readable file under /proc/sys/net, except the exclusions.
// Files that cannot be read (write-only ones, stable_secret before it is set) are
// skipped.
func sysctlLines() ([]string, error) {
	const root = "/proc/sys/net"
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == root {
				return err
			}
			return nil // a directory that cannot be listed
		}
		if d.IsDir() {
			return nil
		}
		rel := strings.TrimPrefix(p, root+"/")
		if _, excluded := ExcludedSysctl(rel); excluded {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		lines = append(lines, SysctlLine(rel, string(b)))
		return nil
	})
	return lines, err
}

func nftLines() ([]string, error) {
	if _, err := exec.LookPath("nft"); err != nil {
		return []string{"skipped: nft not found"}, nil
	}
	// -s (stateless): no counter or quota values, which change with traffic.
	return run("nft", "-s", "list", "ruleset")
}

// xtTables lists the tables to ask cmd about: none when cmd is not installed; for
// legacy iptables only the tables the kernel has (listing another would create it);
// for iptables-nft all five (it reports a missing table's built-in chains without
// creating it, as iptables 1.8.9 does).
func xtTables(cmd string) []string {
	if _, err := exec.LookPath(cmd); err != nil {
		return nil
	}
	all := []string{"filter", "nat", "mangle", "raw", "security"}
	names := map[string]string{"iptables-legacy": "/proc/net/ip_tables_names", "ip6tables-legacy": "/proc/net/ip6_tables_names"}
	file, legacy := names[cmd]
	if !legacy {
		return all
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil // no legacy tables in this kernel (module not loaded)
	}
	var tables []string
	for _, t := range all {
		if strings.Contains("\n"+string(b), "\n"+t+"\n") {
			tables = append(tables, t)
		}
	}
	return tables
}

func netnsLines() ([]string, error) {
	es, err := os.ReadDir("/run/netns")
	if errors.Is(err, fs.ErrNotExist) {
		return []string{"absent"}, nil
	}
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, e := range es {
		lines = append(lines, e.Name())
	}
	return lines, nil
}

// run runs a command and returns its standard output as lines; its standard error
// (iptables-nft's warnings about legacy tables, say) is left out unless it fails.
func run(name string, args ...string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return Lines(stdout.String()), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return Lines(stdout.String()), nil
}
