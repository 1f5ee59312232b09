# Development tasks. `just --list` shows them all.

set shell := ["bash", "-euo", "pipefail", "-c"]

halfstack := justfile_directory() / "halfstack/halfstack"

# Show the recipes.
default:
    @just --list

# Bring up the halfstack, migrate, load the default fixture (admin and user
# keypairs), start one local agent (process backend, RPC on 127.0.0.1:6011)
# and run the manager in the foreground; Ctrl-C stops both.
run: halfstack-up
    cargo build -p manager -p agent
    cargo run -q -p manager -- migrate
    cargo run -q -p manager -- fixture populate fixtures/default.json
    cargo run -q -p agent -- --config agent.sample.toml --backend process --listen tcp://127.0.0.1:6011 & \
        agent=$!; \
        trap 'kill $agent 2>/dev/null; wait $agent 2>/dev/null' EXIT; \
        cargo run -q -p manager -- start-server

# Run the whole test suite against a fresh-enough halfstack (fast, non-durable mode).
test: halfstack-up client-venv
    {{halfstack}} mode fast
    just _drop-test-databases
    if cargo nextest --version >/dev/null 2>&1; then \
        cargo nextest run --workspace --no-fail-fast; \
    else \
        cargo test --workspace --no-fail-fast; \
    fi

# The official client (backend.ai-client 23.9.10, from PyPI) for the compatibility tests.
client-venv:
    if [ ! -x .client-venv/bin/backend.ai ]; then \
        python3 -m venv .client-venv && \
        .client-venv/bin/pip install --quiet "backend.ai-client==23.9.10" "yarl==1.9.4"; \
    fi

# Formatting and clippy, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# Event store benchmark against a durable halfstack database (see docs/benchmarks.md).
bench-eventstore: halfstack-up
    {{halfstack}} mode durable
    cargo bench -p manager-events --bench eventstore

# API benchmark: signed GET, GraphQL user_list and create_keypair against a
# release manager over a durable halfstack (see docs/benchmarks.md).
bench-api: halfstack-up
    {{halfstack}} mode durable
    cargo bench -p manager --bench api

# Agents benchmark: 1,000 dummy agents heartbeating against a release
# manager (CPU share, notice ingest, RPC round trips; see docs/benchmarks.md).
bench-agents: halfstack-up
    {{halfstack}} mode durable
    cargo build --release -p agent
    cargo bench -p manager --bench agents

# Sessions benchmark: enqueue rate through POST /session, placing 10,000
# pending sessions on 1,000 agents (DRF and FIFO), create → RUNNING latency
# with zero-delay dummy agents (see docs/benchmarks.md).
bench-sessions: halfstack-up
    {{halfstack}} mode durable
    cargo build --release -p agent
    cargo bench -p manager --bench sessions

# Start PostgreSQL (8101), Redis (8111) and etcd (8121); idempotent.
halfstack-up:
    {{halfstack}} up

# Stop the halfstack (data kept).
halfstack-down:
    {{halfstack}} down

# Drop databases left behind by interrupted test runs, and old test templates
# (the first test rebuilds the template from the current migrations).
_drop-test-databases:
    for db in $({{halfstack}} psql -d postgres -Atc "select datname from pg_database where datname like 'mgr\_test\_%' or datname like 'mgr\_tmpl\_%'"); do \
        {{halfstack}} psql -d postgres -c "drop database if exists $db with (force)" >/dev/null; \
    done
