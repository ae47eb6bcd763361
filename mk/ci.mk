# CI partitions, included by the Makefile (which defines VENV and setup). Both need root:
# the lab injects real faults and slocap loads eBPF probes.
#
#   make nightly-smoke   smoke profile of dns_latency, tcp_loss, cpu_contention, NIGHTLY_REPS
#                        reruns each (3: the reproducibility rule), then sloan score and
#                        sloan repro on them; fails when a metric varies > 10 % across reruns.
#   make weekly-full     every scenario with the full profile (10/10/5 min phases: about
#                        5 h a rep), then sloan compare GATE_BASE GATE_CANDIDATE and sloan gate.
#                        This job records WEEKLY_TAG only: the other tag's run directories
#                        (its tag=... folder, e.g. from that tag's weekly job) must be
#                        copied into WEEKLY_RUNS first. The gate exits 0 pass, 1 regression,
#                        2 cannot judge (missing data, or fewer than 10 runs per tag).
# Reports and JSON artifacts go to CI_OUT.

NIGHTLY_SCENARIOS ?= dns_latency tcp_loss cpu_contention
NIGHTLY_REPS ?= 3
NIGHTLY_TAG ?= main
WEEKLY_REPS ?= 1
WEEKLY_TAG ?= main
WEEKLY_RUNS ?= runs/weekly
GATE_BASE ?= main
GATE_CANDIDATE ?= v0.2-rc
LAB_INDEX ?= 0
CI_OUT ?= ci-artifacts
REPRO_FLAGS ?= --check
# a fresh runs root per night, so reruns of earlier nights do not mix into repro
ifndef NIGHTLY_RUNS
NIGHTLY_RUNS := runs/nightly/$(shell date -u +%Y%m%dT%H%M%SZ)
endif

.PHONY: nightly-smoke weekly-full

nightly-smoke: setup
	@mkdir -p $(CI_OUT)
	$(VENV)/bin/slocap lab run $(foreach s,$(NIGHTLY_SCENARIOS),--scenario $(s)) --reps $(NIGHTLY_REPS) \
	  --tag $(NIGHTLY_TAG) --profile smoke --out $(NIGHTLY_RUNS) --lab-index $(LAB_INDEX)
	$(VENV)/bin/sloan score --runs $(NIGHTLY_RUNS)
	$(VENV)/bin/sloan repro --runs $(NIGHTLY_RUNS) $(REPRO_FLAGS) --json $(CI_OUT)/nightly-repro.json
# artifacts keep scrubbed runs only (docs/scrub.md); the key stays outside CI_OUT, so pseudonyms
# join across nights on this runner and cannot be reversed from the artifacts
	@mkdir -p build && test -s build/ci-scrub.key || (umask 077 && head -c 32 /dev/urandom > build/ci-scrub.key)
	rm -rf $(CI_OUT)/runs-scrubbed
	$(VENV)/bin/sloan scrub --runs $(NIGHTLY_RUNS) --out $(CI_OUT)/runs-scrubbed --key build/ci-scrub.key

weekly-full: setup
	@mkdir -p $(CI_OUT)
	$(VENV)/bin/slocap lab run --scenario all --reps $(WEEKLY_REPS) --tag $(WEEKLY_TAG) --profile full \
	  --out $(WEEKLY_RUNS) --lab-index $(LAB_INDEX)
	$(VENV)/bin/sloan compare $(GATE_BASE) $(GATE_CANDIDATE) --runs $(WEEKLY_RUNS) --profile full \
	  --json $(CI_OUT)/weekly-compare.json
	$(VENV)/bin/sloan gate --runs $(WEEKLY_RUNS) --base $(GATE_BASE) --candidate $(GATE_CANDIDATE) \
	  --profile full --json $(CI_OUT)/weekly-gate.json
