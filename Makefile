# lvslab: the LVS (IPVS) lab as software.
#   make lab-up     bring the NAT lab up (installs what is missing, builds lvslab)
#   make lab-down   remove every lab and the sandbox kernel
#   make test       unit tests + the Ginkgo conformance suite on a real IPVS kernel

export PATH := /usr/local/go/bin:$(PATH)
GO       ?= go
BIN      := $(CURDIR)/bin/lvslab
SCENARIO ?= scenarios/nat-rr.yaml
# Debian packages: the user-mode-linux kernel (real IPVS where the host has none),
# iproute2/ipvsadm/curl for people poking at a lab, iptables for firewall marks;
# docker.io for the engine container labs run on (inside the sandbox kernel), and
# what the node image copies from this host besides those: tcpdump, arping,
# keepalived, busybox (sh, basic commands, httpd).
APT_PKGS := user-mode-linux kmod iproute2 ipvsadm curl iptables \
	docker.io tcpdump arping keepalived busybox
# What only the tests need: Debian's Chromium, which renders verify's HTML report
# headless (without the packages it only recommends), and tmux, the terminal
# lvslab shell is driven in.
TEST_PKGS := chromium tmux
# Every privileged test runs inside a fresh sandbox kernel, booted per test binary.
SANDBOX  := $(BIN) sandbox run --
REPORT   := $(CURDIR)/e2e/report
GINKGO_FLAGS_BASE := --randomize-all --fail-on-pending --fail-on-empty --keep-going
GINKGO_FLAGS := $(GINKGO_FLAGS_BASE) --junit-report=$(REPORT)/junit.xml
LABELS   ?=

.PHONY: deps testdeps report unit-privileged bench-grade build lab-up lab-down test unit e2e privileged hostnft hosttest hostkernel stress engine hostsnap-before hostsnap-after bench fuzz clean

deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	$(GO) mod download

testdeps:
	@missing=""; for p in $(TEST_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing for the tests:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

VERSION  := $(shell git describe --always --dirty 2>/dev/null || echo devel)
COMMIT   := $(shell git rev-parse HEAD 2>/dev/null)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION) -X main.commit=$(COMMIT)" -o $(BIN) ./cmd/lvslab

bin/ginkgo: go.mod
	$(GO) build -o bin/ginkgo github.com/onsi/ginkgo/v2/ginkgo

lab-up: deps build
	$(BIN) up $(SCENARIO)

lab-down: build
	$(BIN) down

# The host's network namespace is snapshotted before and compared after: lvslab
# must touch nothing of the host's (addresses, routes, rules, net sysctls,
# nft/iptables rulesets, /run/netns).
test: deps testdeps build hostsnap-before unit-privileged report hostnft e2e hostsnap-after

# The unit tests use every CPU but seldom both for long; a sandbox kernel uses
# one and mostly waits: side by side they take the time of the longest. The
# host tests count only their own (kept) sandbox kernel's processes, so the
# privileged tests' throwaway kernels beside them do not disturb them.
unit-privileged:
	@mkdir -p $(REPORT)
	@$(MAKE) --no-print-directory privileged > $(REPORT)/privileged.log 2>&1 & p=$$!; \
	$(MAKE) --no-print-directory hosttest hostkernel > $(REPORT)/hosttest.log 2>&1 & h=$$!; \
	$(MAKE) --no-print-directory unit; u=$$?; wait $$p; q=$$?; wait $$h; r=$$?; \
	echo "--- make privileged:"; cat $(REPORT)/privileged.log; \
	echo "--- make hosttest hostkernel:"; cat $(REPORT)/hosttest.log; \
	echo "unit exit $$u, privileged exit $$q, hosttest and hostkernel exit $$r"; \
	[ $$u -eq 0 ] && [ $$q -eq 0 ] && [ $$r -eq 0 ]

hostsnap-before:
	@mkdir -p $(REPORT)
	$(GO) run ./internal/hostsnap > $(REPORT)/host-before.txt

hostsnap-after:
	$(GO) run ./internal/hostsnap > $(REPORT)/host-after.txt
	@diff -u $(REPORT)/host-before.txt $(REPORT)/host-after.txt || \
	  { echo "make test changed the host's network namespace (diff above)"; exit 1; }

# The e2e suite needs a kernel with IPVS: it runs in `make e2e`, not here.
unit:
	$(GO) vet ./...
	$(GO) test -short -count=1 $$($(GO) list ./... | grep -v /e2e)

# verify's HTML report in headless Chromium: it loads nothing but itself, shows
# the checks' text, and its screenshot (e2e/report/report-screenshot.png) shows
# the bar charts. Fails, not skips, without chromium.
report:
	@mkdir -p $(REPORT)
	LVSLAB_REQUIRE_CHROMIUM=1 LVSLAB_REPORT_DIR=$(REPORT) $(GO) test -count=1 -run '^TestRenderInChromium$$' -v ./pkg/report/

# Package tests that need root and a kernel with IPVS (namespaces, veth, netlink).
# Firewall marks there must get the legacy iptables backend (no nftables ip family).
# An engine that cannot start (a dockerd that fails, one that never answers)
# is a clear error and leaves nothing: seconds, so here (the rest of the
# engine's own tests are make engine; the containerlab e2e job covers them).
privileged: build
	LVSLAB_REQUIRE_MARKS=iptables-legacy $(GO) test -count=1 -exec "$(SANDBOX)" ./pkg/topo/ ./pkg/scenario/ ./pkg/runner/ ./pkg/apply/
	LVSLAB_REQUIRE_ENGINE=1 $(GO) test -count=1 -run '^TestEngineStartFailures$$' -exec "$(SANDBOX)" ./pkg/image/

# Firewall marks on this machine's own kernel, which has nftables (and no IPVS): in
# two throwaway namespaces, as root, the nftables backend (and legacy iptables
# forced, where the kernel has both) must mark exactly the packets to the marked
# ports, and leave nothing behind. Fails, not skips, when it cannot run.
hostnft:
	LVSLAB_REQUIRE_MARKS=nftables $(GO) test -count=1 -run '^TestMarksOnKernel$$' -v ./pkg/apply/

# The suite is compiled on the host, then the Ginkgo CLI runs it inside a fresh
# sandbox kernel. LABELS=nat (a Ginkgo label filter) runs a part.
# The CLI on the host against a kept sandbox kernel: up returns, later commands
# reach the lab, down and gc (after kill -9 of the supervisor) leave nothing.
hosttest: build
	LVSLAB_REQUIRE_HOSTTEST=1 LVSLAB_REQUIRE_CHROMIUM=1 $(GO) test -count=1 -skip '^(TestHostKernel|TestKillUpAtRandomPoints)$$' ./cmd/lvslab/

# lvslab as on a distribution's host whose kernel has IPVS but has not loaded it
# (the --kernel host path): a bare sandbox kernel, nothing loaded, its module tree
# at /lib/modules/<release>. lvslab detects IPVS, builds a NAT lab, removes it.
# kill -9 of lvslab up at STRESS (default 120) random points spread over all of
# up, each followed by gc: nothing of the lab may be left. Not part of make test.
stress: build
	$(GO) test -c -o bin/cmd.test ./cmd/lvslab/
	LVSLAB_STRESS=$${STRESS:-120} $(SANDBOX) bin/cmd.test -test.run '^TestKillUpAtRandomPoints$$' -test.v -test.count=1 -test.timeout 30m

# The Docker engine in a fresh sandbox kernel: start it, import the node image,
# run a privileged container without a network from it, run the lab's tools in
# it, remove everything and check nothing is left; a dockerd that fails or never
# answers; gc after dockerd and containerd were killed. Not part of make test
# (60-95 s on this project's machines: 25-50 s for the first spec, 20-30 s for gc).
engine: build
	$(GO) test -c -o bin/image.test ./pkg/image/
	LVSLAB_REQUIRE_ENGINE=1 $(SANDBOX) bin/image.test -test.run '^TestEngine' -test.v -test.count=1 -test.timeout 15m

hostkernel: build
	$(GO) test -c -o bin/cmd.test ./cmd/lvslab/
	LVSLAB_HOSTKERNEL=1 $(BIN) sandbox run --bare -- bin/cmd.test -test.run '^TestHostKernel$$' -test.v -test.count=1

# With no LABELS the suite runs as two halves side by side, each in a sandbox
# kernel of its own (a sandbox kernel uses one CPU, and these machines have
# two: a third part made every spec slower): E2E_HALF's labels, and the rest.
# Their JUnit reports are junit-1.xml and junit-2.xml; both must pass.
E2E_HALF := containerlab || groundtruth || hashing || thresholds || expiry || docs1 || grade
e2e: build bin/ginkgo
	@mkdir -p $(REPORT)
	$(GO) test -c -o bin/e2e.test ./e2e/
ifeq ($(LABELS),)
	@rm -f $(REPORT)/junit*.xml
	$(SANDBOX) bin/ginkgo $(GINKGO_FLAGS_BASE) --junit-report=$(REPORT)/junit-1.xml --timeout 20m \
	  --label-filter='$(E2E_HALF)' bin/e2e.test > $(REPORT)/e2e-1.log 2>&1 & one=$$!; \
	$(SANDBOX) bin/ginkgo $(GINKGO_FLAGS_BASE) --junit-report=$(REPORT)/junit-2.xml --timeout 20m \
	  --label-filter='!($(E2E_HALF))' bin/e2e.test; two=$$?; \
	wait $$one; first=$$?; echo "--- first half ($(E2E_HALF)):"; cat $(REPORT)/e2e-1.log; \
	echo "e2e: first half exit $$first, second half exit $$two"; \
	if [ $$first -ne 0 ] || [ $$two -ne 0 ]; then \
	  $(GO) run ./internal/junitfail $(REPORT)/junit-1.xml $(REPORT)/junit-2.xml; exit 1; fi
else
	$(SANDBOX) bin/ginkgo $(GINKGO_FLAGS) --timeout 20m --label-filter='$(LABELS)' bin/e2e.test
endif

# Grading a class: 30 labs up in one sandbox kernel, graded at concurrency 4, 8
# and 1; lvslab grade prints each run's time on standard error.
bench-grade: build
	$(SANDBOX) hack/bench-grade.sh

# Benchmarks (targets in README): lab up inside the sandbox, sandbox boot on the host.
bench: build
	$(GO) test -run '^$$' -bench 'UpNAT|UpPhases' -benchtime 20x -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench ClientThroughput -benchtime 3x -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench ClientConcurrent -benchtime 1x -timeout 20m -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench ManyLabs -benchtime 1x -timeout 30m -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench UpContainerlab -benchtime 3x -timeout 30m -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench Failover -benchtime 1x -timeout 30m -exec "$(SANDBOX)" ./pkg/runner/
	$(GO) test -run '^$$' -bench . -benchtime 5x ./pkg/sandbox/

# Fuzz the loaders one after the other, each for FUZZTIME (default 60s): the ipvsadm
# rule parser, scenario files, topology files. New inputs are minimized for at most
# 5s (Go's default of 60s would eat most of a short run).
# New interesting inputs stay in Go's cache; copy one to the package's
# testdata/fuzz/<Target>/ only when it exposed a bug, as a regression seed.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzRule$$' -fuzztime $${FUZZTIME:-60s} -fuzzminimizetime 5s ./pkg/ipvsadm/
	$(GO) test -run '^$$' -fuzz '^FuzzScenario$$' -fuzztime $${FUZZTIME:-60s} -fuzzminimizetime 5s ./pkg/scenario/
	$(GO) test -run '^$$' -fuzz '^FuzzTopology$$' -fuzztime $${FUZZTIME:-60s} -fuzzminimizetime 5s ./pkg/topo/

clean:
	rm -rf bin $(REPORT)
