package verify

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/lvslab/lvslab/pkg/lab"
	"github.com/lvslab/lvslab/pkg/node"
)

// trafficTimeout bounds each request of a traffic step: a request to a VIP
// nobody holds would otherwise wait for TCP's retransmissions.
const trafficTimeout = 500 * time.Millisecond

// endWait bounds how long a traffic_end waits for the traffic's first answer
// after failures.
const endWait = 3 * time.Second

// traffic is a client sending one request after another in the background,
// from a traffic step until a traffic_end step (or the end of the run).
type traffic struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	reqs   []trafficReq
}

// trafficReq is one request: when it started, and whether it was answered.
type trafficReq struct {
	at time.Time
	ok bool
}

// startTraffic starts requests to url from n, one every every (a request
// still waiting delays the next).
func startTraffic(ctx context.Context, n node.Node, url string, every time.Duration) *traffic {
	ctx, cancel := context.WithCancel(ctx)
	t := &traffic{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		next := time.Now()
		for ctx.Err() == nil {
			at := time.Now()
			r := HTTPClient{From: n, Timeout: trafficTimeout}.Get(ctx, url, 1)
			if ctx.Err() != nil {
				return // cut short by the end, not a failure
			}
			t.mu.Lock()
			t.reqs = append(t.reqs, trafficReq{at: at, ok: len(r.Errors) == 0})
			t.mu.Unlock()
			next = next.Add(every)
			if d := time.Until(next); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			} else {
				next = time.Now()
			}
		}
	}()
	return t
}

// trafficReport is what a traffic run saw.
type trafficReport struct {
	Requests, Failed int
	Outage           time.Duration // the longest run of failures: from its first request to the next answered one
	OutageFrom       time.Time
}

// stop ends the traffic and reports it. When the last request failed, the
// traffic goes on until one is answered again (for at most endWait), so
// that the outage it reports has an end.
func (t *traffic) stop() trafficReport {
	deadline := time.Now().Add(endWait)
	for time.Now().Before(deadline) {
		t.mu.Lock()
		n := len(t.reqs)
		failing := n > 0 && !t.reqs[n-1].ok
		t.mu.Unlock()
		if !failing {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.cancel()
	<-t.done
	t.mu.Lock()
	defer t.mu.Unlock()
	return summarize(t.reqs)
}

// summarize counts the failures and finds the longest outage; an outage
// still going at the end lasts until the last request.
func summarize(reqs []trafficReq) trafficReport {
	r := trafficReport{Requests: len(reqs)}
	var from time.Time
	for _, q := range reqs {
		switch {
		case !q.ok:
			r.Failed++
			if from.IsZero() {
				from = q.at
			}
		case !from.IsZero():
			if d := q.at.Sub(from); d > r.Outage {
				r.Outage, r.OutageFrom = d, from
			}
			from = time.Time{}
		}
	}
	if !from.IsZero() {
		if d := reqs[len(reqs)-1].at.Sub(from) + trafficTimeout; d > r.Outage {
			r.Outage, r.OutageFrom = d, from
		}
	}
	return r
}

// trafficStep starts or ends the traffic of a step.
func (v *Judge) trafficStep(ctx context.Context, n node.Node, a lab.Action) (string, error) {
	if a.Kind == lab.ActTraffic {
		if v.traffic != nil {
			return "", errors.New("traffic runs already (end it with a traffic_end step first)")
		}
		// Traffic the models do not follow: the service's model goes.
		if svc, _, ok := v.service(lab.Check{HTTP: a.HTTP}); ok {
			delete(v.models, svc.Key())
		}
		v.traffic = startTraffic(ctx, n, a.HTTP, a.Every)
		return "", nil
	}
	if v.traffic == nil {
		return "", errors.New("no traffic runs (start it with a traffic step)")
	}
	r := v.traffic.stop()
	v.traffic = nil
	msg := fmt.Sprintf("%d requests, %d failed", r.Requests, r.Failed)
	if r.Failed > 0 {
		msg += fmt.Sprintf("; longest outage %v", r.Outage.Round(time.Millisecond))
		if !v.lastAct.IsZero() {
			msg += fmt.Sprintf(", from %v after the last change began", r.OutageFrom.Sub(v.lastAct).Round(time.Millisecond))
		}
	}
	var errs []string
	if a.MaxFailed != nil && r.Failed > *a.MaxFailed {
		errs = append(errs, fmt.Sprintf("%d failed, at most %d may", r.Failed, *a.MaxFailed))
	}
	if a.MaxOutage != 0 && r.Outage > a.MaxOutage {
		errs = append(errs, fmt.Sprintf("the outage lasted %v, at most %v may", r.Outage.Round(time.Millisecond), a.MaxOutage))
	}
	if len(errs) > 0 {
		return "", fmt.Errorf("%s: %s", msg, errs)
	}
	return msg, nil
}
