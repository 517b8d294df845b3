# `make test` is the one command CI and developers run: it installs missing test
# dependencies, then checks formatting, lints, and runs every test.
.PHONY: test deps fmt-check lint lint-docker unit bench compare demo install

CARGO ?= cargo
# `make install PREFIX=/usr/local` installs into PREFIX/bin; default: cargo's own (~/.cargo/bin).
PREFIX ?=

test: deps fmt-check lint lint-docker
	bash -n benches/compare.sh   # syntax only: the load comparison itself is `make compare`
	$(CARGO) test --benches --quiet   # runs every criterion bench once, as a smoke test
	$(CARGO) test

deps:
	@scripts/test-deps.sh

fmt-check:
	$(CARGO) fmt --check

lint:
	$(CARGO) clippy --all-targets -- -D warnings

lint-docker: deps
	target/venv/bin/hadolint Dockerfile

bench:
	$(CARGO) bench --bench hot_path
	$(CARGO) bench --bench revocation
	benches/compare.sh

# keygate vs nginx with a map of the same keys, on loopback, pinned, interleaved rounds
# (benches/compare.sh --help). Takes about a minute; not part of `make test`.
compare:
	benches/compare.sh

demo:
	$(CARGO) run --release -- demo

# Builds the release binary from this checkout (the locked dependency versions) and puts
# `keygate` on PATH, so the README's and the demo's `keygate ...` lines run as printed.
install:
	$(CARGO) install --path . --locked $(if $(PREFIX),--root $(PREFIX))
