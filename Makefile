# Entry points. Every target bootstraps the toolchain first (apt packages, Varnish 7.7
# in a cache prefix outside the clone), so a fresh Debian 12 machine needs nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ENVFILE := target/varnish-env.sh
WITH_ENV := . $(ENVFILE) &&

.PHONY: all bootstrap env build release lint docs unit vtc test demo demo-smoke demo-cluster demo-cluster-smoke clean

all: build

# Writes the export lines for the Varnish in use; cheap when everything is cached.
bootstrap:
	@mkdir -p target
	@scripts/env.sh > $(ENVFILE).tmp && mv $(ENVFILE).tmp $(ENVFILE)

env:
	@scripts/env.sh 2>/dev/null

.PHONY: test-bootstrap test-harness
# Offline tests of bootstrap's source selection against a Debian-like mirror on loopback.
test-bootstrap: bootstrap
	python3 scripts/tests/bootstrap_mirror.py

# Unit tests of the one harness (scripts/harness/: varnishd instances, destinations, ports)
# and of scripts/arch_figures.py.
test-harness: bootstrap
	$(WITH_ENV) python3 -m unittest discover -s scripts/tests -p 'test_*.py'

build: bootstrap
	$(WITH_ENV) cargo build --workspace --locked

release: bootstrap
	$(WITH_ENV) cargo build --workspace --locked --release

lint: bootstrap
	$(WITH_ENV) cargo fmt --all --check
	$(WITH_ENV) cargo clippy --workspace --all-targets --locked -- -D warnings
	@# The fuzz crate compiles the pure modules by path: a module they start using must be
	@# visible there too, or `make fuzz` breaks unnoticed.
	$(WITH_ENV) cd fuzz && cargo check --locked --all-targets
	$(WITH_ENV) scripts/gen-docs.sh --check

# docs/vmod_*.rst: the VCL reference, generated from each vmod.vcc.
docs: bootstrap
	$(WITH_ENV) scripts/gen-docs.sh

# `cargo test` runs the unit tests and one test per .vtc file; the .so files it loads
# come from the `build` step before it.
vtc unit: build
	$(WITH_ENV) cargo test --workspace --locked

test: bootstrap test-bootstrap test-harness lint build
	$(WITH_ENV) cargo test --workspace --locked
	$(MAKE) --no-print-directory demo-smoke demo-cluster-smoke check-examples faults-fast check-install check-deb

demo: release
	$(WITH_ENV) scripts/demo.sh

demo-smoke: release
	$(WITH_ENV) scripts/demo.sh --smoke

# Three caches, each the peer of the two others (purge fan-out without loops).
demo-cluster: release
	$(WITH_ENV) scripts/demo-cluster.sh

demo-cluster-smoke: release
	$(WITH_ENV) scripts/demo-cluster.sh --smoke

clean:
	cargo clean

.PHONY: install deb check-install check-deb check-examples

# Compiles examples/*.vcl and runs examples/tests/*.vtc (incl. the three-node purge fan-out).
check-examples: release
	$(WITH_ENV) scripts/check-examples.sh --release

# Installs both modules, man pages and docs; honours DESTDIR, PREFIX (and VMODDIR, MANDIR, DOCDIR).
install: release
	$(WITH_ENV) scripts/install.sh --release

# Builds target/debian/varnish-vmod-{peer,saintmode}_<version>_<arch>.deb with dpkg-buildpackage
# in a cached Debian 13 root, against Debian's libvarnishapi-dev (needs root; see debian/README.source).
deb:
	scripts/deb.sh

check-install: release
	$(WITH_ENV) scripts/check-install.sh --release --no-build

# Builds the packages (as `make deb`), installs them with apt into a fresh Debian 13 root and
# runs Debian's varnishd with them, alone and next to varnish-modules; then remove and purge.
check-deb:
	scripts/check-deb.sh

.PHONY: bench bench-readme
# Benchmarks (bounded, < 10 min): pinned A/B alternation gated on A/A controls, CPU per request,
# cargo bench micro-benchmarks; target/bench/results.json. The parser tests run first (< 1 s).
bench: release
	python3 -m unittest discover -s bench/lib -p 'test_*.py'
	$(WITH_ENV) bench/run.sh

# README's benchmark table, regenerated from target/bench/results.json (never edited by hand).
bench-readme:
	python3 bench/lib/report.py --readme README.md target/bench/results.json

.PHONY: faults faults-fast fuzz
# Fault suite (peer flapping/blackholed, reload cycles, child kill, saintmode races, bad input).
faults: release
	$(WITH_ENV) scripts/faults.sh

faults-fast: release
	$(WITH_ENV) scripts/faults.sh --fast

# cargo-fuzz targets, FUZZ_SECONDS each (default 60).
fuzz: bootstrap
	$(WITH_ENV) scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)

.PHONY: soak memcheck
# Soak test, SOAK_SECONDS (default 600): samples and plot in target/soak/.
soak: release
	$(WITH_ENV) scripts/soak.sh $(or $(SOAK_SECONDS),600)

# The VTCs and a short soak against an AddressSanitizer build of both VMODs (MEMCHECK_SOAK=0 skips the soak).
memcheck: bootstrap
	$(WITH_ENV) faults/memcheck.sh
