#!/usr/bin/env bash
# Redis's instructions per job inside the queue's transitions (every `FCALL`: submit, claim,
# renewals, finish), counted by callgrind on a redis-server run under valgrind. Instructions do
# not depend on what else the VM is doing: the same build counts within ~0.3 % run to run, where
# its µs move by 2× from one hour to the next. So a change to the Lua is judged by this count
# first, then confirmed in µs by scripts/fleet.sh (docs/scaling.md, ninth cuts).
#
# What runs: `dispatch` (tests/src/bin/dispatch.rs) with no backlog, DISPATCH_JOBS (1000) jobs
# with history off and as many with it on, one Redis for both; printed is the count over both
# modes divided by their jobs. Syscalls, and the time Redis spends outside `FCALL`, are not in it.
#
# BASE_DISPATCH=<another build's dispatch binary> (e.g. copied aside before a change): measured
# the same way in the same run, alternated (RUNS pairs, 2), and the ratio printed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_deps
apt_need valgrind=valgrind
cargo build --release --locked -p dcc-e2e --bin dispatch
jobs=${DISPATCH_JOBS:-1000}
runs=${RUNS:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$CARGO_TARGET_DIR/release/dispatch" "$work/dispatch"
# Test Redis servers are started as `redis-server` from PATH (shared/src/testing.rs): this one runs
# the real one under callgrind, counting only inside `FCALL`. The bench kills Redis with SIGKILL,
# so the counts are dumped every 2M basic blocks (what runs after the last dump is not counted:
# under 0.1 % of a run).
cat > "$work/redis-server" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --toggle-collect=fcallCommand --dump-every-bb=2000000 \
  --callgrind-out-file="$work/out.\$CG_TAG.%p" "$(command -v redis-server)" "\$@"
EOF
chmod +x "$work/redis-server"

# Instructions per job of one run of dispatch binary $2 (tag $1).
count() {
  if ! CG_TAG=$1 PATH="$work:$PATH" DCC_TEST_REDIS=single DISPATCH_RUNS=1 DISPATCH_JOBS="$jobs" \
    DISPATCH_BACKLOG=0 DISPATCH_SHARDS=1 "$2" >"$work/$1.log" 2>&1; then
    cat "$work/$1.log" >&2
    exit 1
  fi
  cat "$work"/out."$1".* | awk -v n=$((2 * jobs)) '/^summary:/ {s += $2} END {printf "%.0f", s / n}'
  rm -f "$work"/out."$1".*
}

median() { sort -n | awk '{v[NR] = $1} END {printf "%.0f\n", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

: >"$work/this"
: >"$work/base"
for i in $(seq "$runs"); do
  if [ -n "${BASE_DISPATCH:-}" ]; then
    b=$(count "base$i" "$BASE_DISPATCH")
    echo "run $i, base: $b instructions in FCALL per job"
    echo "$b" >>"$work/base"
  fi
  t=$(count "this$i" "$work/dispatch")
  echo "run $i, this build: $t instructions in FCALL per job"
  echo "$t" >>"$work/this"
done
this=$(median <"$work/this")
echo "this build: $this instructions in FCALL per job (median of $runs; $jobs jobs with history off, $jobs on)"
if [ -n "${BASE_DISPATCH:-}" ]; then
  base=$(median <"$work/base")
  echo "base: $base; this build ÷ base: $(awk -v a="$this" -v b="$base" 'BEGIN {printf "%.3f", a / b}')"
fi
