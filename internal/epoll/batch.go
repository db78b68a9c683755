package epoll

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// Batch puts every thread of this process under SCHED_BATCH (keeping its nice
// value) and returns a function that puts them back.
//
// Why: on one CPU (the sandbox kernel has one), a client and a server that
// drive many connections each wake the other for every one of them: the
// server's answer wakes the client, which the scheduler runs at once in the
// server's place, and the client's next connection wakes the server. Each
// switch costs more than the connection's own work. A SCHED_BATCH thread does
// not preempt the running one when it wakes (kernel/sched/fair.c,
// check_preempt_wakeup), so each side runs until it has nothing left to do,
// and the other then finds dozens of connections to serve at once; in the
// sandbox this took the concurrent driver from about 1,100 to over 2,000
// connections a second. Nothing else changes: the threads keep their share of
// the CPU. Threads started while it is in force inherit it; put back, they get
// the policy the process's main thread had (normal unless it was batch).
func Batch() (restore func(), err error) {
	main, err := unix.SchedGetAttr(os.Getpid(), 0)
	if err != nil {
		return nil, fmt.Errorf("sched_getattr: %w", err)
	}
	saved := map[int]*unix.SchedAttr{}
	err = eachThread(func(tid int) error {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			return err
		}
		if attr.Policy != unix.SCHED_NORMAL && attr.Policy != unix.SCHED_BATCH {
			return nil // real-time or idle: leave it be
		}
		saved[tid] = attr
		batch := *attr
		batch.Policy = unix.SCHED_BATCH
		return unix.SchedSetAttr(tid, &batch, 0)
	})
	restore = func() {
		_ = eachThread(func(tid int) error {
			attr := saved[tid]
			if attr == nil { // started meanwhile
				cur, err := unix.SchedGetAttr(tid, 0)
				if err != nil || cur.Policy != unix.SCHED_BATCH {
					return nil
				}
				cur.Policy = unix.SCHED_NORMAL
				if main.Policy == unix.SCHED_BATCH {
					cur.Policy = unix.SCHED_BATCH
				}
				attr = cur
			}
			_ = unix.SchedSetAttr(tid, attr, 0)
			return nil
		})
	}
	if err != nil {
		restore()
		return nil, fmt.Errorf("sched_setattr: %w", err)
	}
	return restore, nil
}

// eachThread calls fn for every thread of this process; a thread that has
// ended meanwhile is skipped.
func eachThread(fn func(tid int) error) error {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if err := fn(tid); err != nil && err != unix.ESRCH {
			return err
		}
	}
	return nil
}
