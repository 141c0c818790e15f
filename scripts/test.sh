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
scripts/build-test-image.sh
start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo build"
cargo build --workspace --locked
scripts/check-terraform.sh
echo "== cargo test"
cargo test --workspace --locked "$@"
# `--workspace` (not `-p dcc-e2e`) keeps the feature set of the first build, so nothing recompiles.
echo "== the job tests again, with inputs/outputs bound in (DCC_FILES_MODE=bind)"
DCC_TEST_FILES_MODE=bind cargo test --workspace --locked --test jobs --test live "$@"
echo "== the job tests again, on S3 (moto)"
DCC_TEST_STORAGE=s3 cargo test --workspace --locked --test jobs "$@"
# Every test worker's id starts with "t-": none of their containers may outlive the suite.
left=$(docker ps -a --filter label=dcc.worker --format '{{.Label "dcc.worker"}} {{.Names}}' | grep '^t-' || true)
if [ -n "$left" ]; then echo "containers left behind by the tests:"; echo "$left"; exit 1; fi
echo "== no container left behind"
echo "== suite passed in $(( $(date +%s) - start )) s"
