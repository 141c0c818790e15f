#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine: installs what is missing (redis-server,
# busybox-static, docker.io), starts dockerd if it is down, builds the local test image, then
# checks formatting and lints and runs every test (unit, Redis transitions, end to end against
# real Redis and Docker). Each test starts the Redis servers and dcc processes it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_deps
# The dashboard's browser test drives headless Chromium through chromedriver.
apt_need chromium=chromium chromedriver=chromium-driver
# The clock-skew test runs a worker under libfaketime.
apt_need faketime=faketime
# The partition tests put a worker in a network namespace and cut it off with a firewall rule.
apt_need ip=iproute2 iptables=iptables
# The private-registry test runs a real registry with htpasswd auth.
apt_need docker-registry=docker-registry htpasswd=apache2-utils
scripts/build-test-image.sh
start=$(date +%s)
# Every step runs even when an earlier one failed (and cargo runs every test binary:
# --no-fail-fast), so one run shows everything that is broken; the last line sums it up.
failed=()
step() {
  local name=$1 log
  shift
  echo "== $name"
  log=$(mktemp)
  if "$@" 2>&1 | tee "$log"; then rm -f "$log"; return 0; fi
  # cargo lists the failed test binaries after "error: N targets failed:".
  local which
  which=$(sed -n '/targets\? failed:/,$p' "$log" | grep -o -- '--\(test\|lib\|bin\|doc\)[^`]*' | paste -sd, - || true)
  failed+=("$name${which:+ ($which)}")
  rm -f "$log"
}
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build" cargo build --workspace --locked
# The deployable binary (cargo zigbuild, its own target dir): fails when it needs a glibc above 2.34.
step "release artifact runs on glibc 2.34 (AL2023)" env -u CARGO_TARGET_DIR scripts/release.sh
step "terraform checks" scripts/check-terraform.sh
step "cargo test" cargo test --workspace --locked --no-fail-fast "$@"
# `--workspace` (not `-p dcc-e2e`) keeps the feature set of the first build, so nothing recompiles.
step "the job tests again, with inputs/outputs bound in (DCC_FILES_MODE=bind)" \
  env DCC_TEST_FILES_MODE=bind cargo test --workspace --locked --no-fail-fast --test jobs --test live "$@"
step "the job tests again, on S3 (moto)" \
  env DCC_TEST_STORAGE=s3 cargo test --workspace --locked --no-fail-fast --test jobs "$@"
# A local Redis Cluster (three primaries, one replica each) under the same tests. The skipped
# ones inject faults into one server (kill it, restart it, cut its port); tests/tests/cluster.rs
# kills a cluster's primary instead, and runs in the first pass.
step "the queue, shard, job, live, tenant, scaler, reliability and fleet tests again, on a local Redis Cluster" \
  env DCC_TEST_REDIS=cluster cargo test --workspace --locked --no-fail-fast \
    --test queue --test shards --test deps --test array --test history --test jobs --test live --test webhooks \
    --test stats --test tenants --test scaler --test fleet --test reliability "$@" -- \
    --skip a_worker_cut_off_from_redis_stops_its_containers_after_a_lease \
    --skip a_worker_waiting_at_start_up_stops_when_told \
    --skip an_idle_worker_cut_off_from_redis_exits_after_the_drain_timeout \
    --skip server_answers_while_redis_is_down_at_boot
# Every test worker's id starts with "t-": none of their containers may outlive the suite.
no_leftovers() {
  local left
  left=$(docker ps -a --filter label=dcc.worker --format '{{.Label "dcc.worker"}} {{.Names}}' | grep '^t-' || true)
  if [ -n "$left" ]; then echo "containers left behind by the tests:"; echo "$left"; return 1; fi
}
step "no container left behind" no_leftovers
took=$(( $(date +%s) - start ))
if [ ${#failed[@]} -gt 0 ]; then
  echo "== suite FAILED in $took s: $(printf '%s; ' "${failed[@]}" | sed 's/; $//')"
  exit 1
fi
echo "== suite passed in $took s"
