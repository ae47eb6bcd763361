# make release VERSION=vX.Y.Z and make verify-release (included by the Makefile, which
# defines VENV, PY, DIST, DEB_PACKAGES, DATASET and the setup, venv and wheel targets;
# mk/ci.mk defines GATE_BASE, GATE_CANDIDATE and WEEKLY_RUNS). docs/release.md says
# what each artifact is; the steps are python -m release (release/).
#
#   make release-key                     an Ed25519 key pair at RELEASE_KEY, unless it exists
#   make release-bench                   the benchmark inputs of BENCHMARKS.md, in BENCH_DIR
#   make release VERSION=v0.2.0          wheel, sdist, SBOM, BENCHMARKS.md, public key,
#                                        SHA256SUMS, signed SLSA provenance, in DIST
#   make verify-release                  DIST against its signature (RELEASE_PUB), the SBOM
#                                        against the wheel's dependency closure

VERSION ?=
RELEASE_KEY ?= $(HOME)/.config/llm-slo/release-ed25519.pem
# verify-release trusts this public key; empty: the one beside RELEASE_KEY (.pub.pem)
RELEASE_PUB ?=
# the provenance's runDetails.builder.id; empty: urn:llm-slo-ebpf-toolkit:builder:make-release:USER@HOST
RELEASE_BUILDER_ID ?=
BENCH_DIR ?= build/bench
# Debian packages in the SBOM besides DEB_PACKAGES: capture/bcc_setup.sh installs these
RELEASE_BCC_DEBS := python3-bpfcc

# release-bench: one input of BENCHMARKS.md each, with these settings. overhead needs
# root and a quiet machine (lab workload, 20 pairs per tool + 20 A/A of 30 s windows: about 1.5 h);
# correlate_throughput 12-16 GiB of RAM for 10M events (a few minutes); score and repro
# read the committed labelled set; compare needs runs of both tags (the weekly job's).
RELEASE_BENCHES ?= overhead correlate_throughput score repro compare
BENCH_OVERHEAD_ARGS ?= --workload lab --pairs 20 --aa-pairs 20 --seed 42
BENCH_CORRELATE_ARGS ?= --sizes 1M,2M,5M,10M --seed 42
BENCH_RUNS ?= $(DATASET)
BENCH_SCORE_ARGS ?= --seed 42
BENCH_BASE ?= $(GATE_BASE)
BENCH_CANDIDATE ?= $(GATE_CANDIDATE)
BENCH_COMPARE_RUNS ?= $(WEEKLY_RUNS)
BENCH_COMPARE_ARGS ?= --seed 42

RELEASE_ALL_BENCHES := overhead correlate_throughput score repro compare
BENCH_CMD_overhead = $(PY) bench/overhead.py $(BENCH_OVERHEAD_ARGS) --json $(BENCH_DIR)/overhead.json
BENCH_CMD_correlate_throughput = $(PY) bench/correlate_throughput.py $(BENCH_CORRELATE_ARGS) \
  --json $(BENCH_DIR)/correlate_throughput.json
BENCH_CMD_score = $(VENV)/bin/sloan score $(addprefix --runs ,$(BENCH_RUNS)) $(BENCH_SCORE_ARGS) \
  --json $(BENCH_DIR)/score.json
BENCH_CMD_repro = $(VENV)/bin/sloan repro $(addprefix --runs ,$(BENCH_RUNS)) --json $(BENCH_DIR)/repro.json
BENCH_CMD_compare = $(VENV)/bin/sloan compare $(BENCH_BASE) $(BENCH_CANDIDATE) --runs $(BENCH_COMPARE_RUNS) \
  $(BENCH_COMPARE_ARGS) --json $(BENCH_DIR)/compare.json
BENCH_RUN_OPTS_score = $(addprefix --runs ,$(BENCH_RUNS))
BENCH_RUN_OPTS_repro = $(addprefix --runs ,$(BENCH_RUNS))
BENCH_RUN_OPTS_compare = $(addprefix --runs ,$(BENCH_COMPARE_RUNS))
release_bench_run = $(PY) -m release bench-run --out $(BENCH_DIR)/$(1).json $(BENCH_RUN_OPTS_$(1)) -- \
  $(BENCH_CMD_$(1))

.PHONY: release release-key verify-release release-bench $(addprefix release-bench-,$(RELEASE_ALL_BENCHES))

release-key: venv
	$(PY) -m release key --key "$(RELEASE_KEY)"

release: venv
	@set -e; started=$$(date -u +%Y-%m-%dT%H:%M:%SZ); \
	$(PY) -m release preflight --version "$(VERSION)" --key "$(RELEASE_KEY)" --dist "$(DIST)"; \
	$(MAKE) --no-print-directory wheel DIST="$(DIST)"; \
	$(PY) -m release assemble --version "$(VERSION)" --key "$(RELEASE_KEY)" --dist "$(DIST)" \
	  --bench-dir "$(BENCH_DIR)" --debs "$(DEB_PACKAGES)" --bcc-debs "$(RELEASE_BCC_DEBS)" \
	  --started "$$started" --command "make release VERSION=$(VERSION) DIST=$(DIST) BENCH_DIR=$(BENCH_DIR)" \
	  $(if $(RELEASE_BUILDER_ID),--builder-id "$(RELEASE_BUILDER_ID)") \
	  $(foreach b,$(RELEASE_ALL_BENCHES),--bench-command '$(b)=$(BENCH_CMD_$(b))')

verify-release: venv
	@$(PY) -m release verify --dist "$(DIST)" $(if $(RELEASE_PUB),--pub "$(RELEASE_PUB)",--key "$(RELEASE_KEY)")

# every benchmark of RELEASE_BENCHES, each in its own make so one failing (say, compare
# without runs of both tags) leaves the others measured; exits 1 naming the failed ones
release-bench:
	@failed=; for b in $(RELEASE_BENCHES); do \
	  $(MAKE) --no-print-directory release-bench-$$b || failed="$$failed $$b"; \
	done; \
	if [ -n "$$failed" ]; then \
	  echo "release-bench: not measured:$$failed (BENCHMARKS.md says so; the rest is in $(BENCH_DIR))" >&2; exit 1; \
	fi

release-bench-overhead: setup
	$(call release_bench_run,overhead)

release-bench-correlate_throughput release-bench-score release-bench-repro release-bench-compare: \
release-bench-%: venv
	$(call release_bench_run,$*)
