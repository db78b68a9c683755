#!/bin/sh
# Grading a class of 30 labs: 30 labs of scenarios/nat-rr.yaml up in one
# sandbox kernel (stu01..stu30; every fifth one changed to source hashing, so
# some fail), then lvslab grade over all of them, timed, at concurrency 4 (the
# default; the labs are fresh, every check judged), then 8 and 1 (rr has served
# traffic by then: its sequence check is skipped, so those runs do less).
# Run inside the sandbox: make bench-grade.
set -eu
n=${LABS:-30}
labs=""
i=1
while [ "$i" -le "$n" ]; do
	name=$(printf 'stu%02d' "$i")
	bin/lvslab up --name "$name" scenarios/nat-rr.yaml 2>/dev/null
	if [ $((i % 5)) -eq 0 ]; then
		bin/lvslab exec --lab "$name" director -- ipvsadm -E -t 203.0.113.1:80 -s sh
	fi
	labs="$labs $name"
	i=$((i + 1))
done
for c in 4 8 1; do
	# shellcheck disable=SC2086
	bin/lvslab grade --scenario e2e/testdata/grade-nat-rr.yaml --concurrency "$c" --csv /dev/null $labs >/dev/null
done
bin/lvslab down >/dev/null 2>&1
