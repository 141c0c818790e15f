#!/usr/bin/env bash
# Runs the latency/throughput benchmark on a release build (see docs/performance.md).
# BENCH_N (samples per latency, default 30) and BENCH_SUBMITS (default 20000) tune it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_deps
scripts/build-test-image.sh
cargo build --release --locked -p dcc-server -p dcc-e2e --bin dcc --bin bench
exec "$CARGO_TARGET_DIR/release/bench"
