package verify

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// notConcurrent says why a check that asks for connections in flight cannot
// be sent so by this judge ("" when it can): the curl driver makes one request
// at a time, and a check's counts at one request at a time would take curl
// minutes (a process costs about a quarter of a second in the sandbox kernel).
func (v *Judge) notConcurrent(c lab.Check) string {
	if c.Concurrency > 1 && v.Driver == lab.DriverCurl {
		return fmt.Sprintf("concurrency %d needs lvslab's own client (--client go): curl makes one request at a time", c.Concurrency)
	}
	return ""
}

// sendConcurrent sends an HTTP check's requests with c.Concurrency
// connections in flight, from all of its sources at once, when the check asks
// for that (lvslab's own client; see notConcurrent). Every connection takes a fresh port of the run's pool for its
// source address; see SourcePorts for why none collides with an entry the
// director still keeps. It returns false, sending nothing, otherwise.
func (v *Judge) sendConcurrent(ctx context.Context, c lab.Check, from node.Node, srcs []netip.Addr) (Result, bool) {
	if c.Concurrency <= 1 || c.Kind() != lab.CheckHTTP || v.Driver == lab.DriverCurl {
		return Result{}, false
	}
	return HTTPClient{From: from, Ports: v.ports}.GetConcurrent(ctx, c.HTTP, c.Requests, c.Concurrency, srcs...), true
}

// countsDiffer compares what a model predicts for connections sent
// concurrently, as counts (the multiset of its predicted sequence: the order
// in which the director schedules them is not known), with the observed
// counts. It says how they differ, or "" when they agree. The scenario's
// validation admits only schedulers whose picks do not depend on that order.
func countsDiffer(pred []string, observed map[string]int) string {
	want := map[string]int{}
	for _, x := range pred {
		if x != "" {
			want[x]++
		}
	}
	var servers []string
	for k := range want {
		servers = append(servers, k)
	}
	for k := range observed {
		if _, ok := want[k]; !ok {
			servers = append(servers, k)
		}
	}
	slices.Sort(servers)
	var diff []string
	for _, k := range servers {
		if want[k] != observed[k] {
			diff = append(diff, fmt.Sprintf("%s %d (predicted %d)", k, observed[k], want[k]))
		}
	}
	if diff == nil {
		return ""
	}
	return "counts differ from the model's: " + strings.Join(diff, ", ")
}
