#!/usr/bin/env bash
# Runs the fleet benchmark on a release build (see docs/scaling.md): simulated workers against
# one Redis and a real API server. FLEET_SIZES (10,100,500,1000), FLEET_QUEUED (100000),
# FLEET_WINDOW_SECS (15), FLEET_IDLE_SECS (10) and FLEET_JOB_MS (1000) tune it; FLEET_REDIS_CPU=<n>
# pins Redis to core n and the rest to the other cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_deps
cargo build --release --locked -p dcc-server -p dcc-e2e --bin dcc --bin fleet
# One process holds a subscription and a connection pool per simulated worker.
ulimit -n 65536 2>/dev/null || true
exec "$CARGO_TARGET_DIR/release/fleet"
