# Thin wrappers: every target is one cargo or script call.
CARGO ?= cargo

.PHONY: build test check deny images bench run soak deb lint-deb vm-image

build:
	$(CARGO) build --release --bin capstan

## The README's test command: every crate's unit and integration tests (Docker tests included).
test:
	$(CARGO) test --workspace --locked

check:
	$(CARGO) fmt --all -- --check && $(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Licenses, duplicate versions and sources of every dependency (deny.toml); needs cargo-deny.
## Advisories need the RustSec database from the network: run `cargo deny check` where it can.
deny:
	$(CARGO) deny check licenses bans sources

## Offline container images (capstan/busybox, capstan/redis, capstan/http); no registry needed.
images:
	images/build.sh

## Benchmarks; each writes its table into docs/BENCHMARKS.md.
bench: build
	$(CARGO) run --release --locked -p capstan-bench -- --out docs/BENCHMARKS.md

## coord's linearizability fault test over many seeds; prints any failing seed to replay
## (COORD_LIN_SEED=<seed> cargo test -p capstan-coord --test it random_clients).
soak:
	COORD_LIN_SEED=$$(seq -s, 1 $${SEEDS:-200}) $(CARGO) test --release -p capstan-coord --test it random_clients -- --nocapture

## Build, make the images, and run a local cluster (what exists so far; see README).
run: build images
	target/release/capstan dev up

## The Debian package target/debian/capstan_<version>-1_amd64.deb: the release binary, the
## systemd units, install.sh and the images (packaging/build-deb.sh; `make images` first).
## Quick, for tests: BIN=target/debug/capstan NO_IMAGES=1 packaging/build-deb.sh
deb: build
	packaging/build-deb.sh

## `make deb`, then lintian on the package: errors fail, and warnings unless packaging/lintian-allow
## justifies them.
lint-deb: deb
	packaging/lint-deb.sh "$$(ls -t target/debian/capstan_*_amd64.deb | head -n 1)"

## The VM images: target/images/capstan-<version>.qcow2 (cloud-init) and its lean variant
## capstan-<version>-lean.qcow2 (fw_cfg only), each with its .sha256, from `make deb`'s package
## (images/vm/build.sh; needs root, mmdebstrap, fdisk, extlinux, qemu-utils).
vm-image: deb
	DEB="$$(ls -t target/debian/capstan_*_amd64.deb | head -n 1)" VARIANT=full images/vm/build.sh
	DEB="$$(ls -t target/debian/capstan_*_amd64.deb | head -n 1)" VARIANT=lean images/vm/build.sh
	@echo "target/images (sha256):" && cat target/images/capstan-*.qcow2.sha256
