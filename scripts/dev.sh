#!/usr/bin/env bash
# Brings the whole stack up on one machine with embedded defaults, then shows a job running:
# installs what is missing, starts a local Redis on a free port and dockerd if it is down, builds
# dcc and the local busybox image, starts `dcc server` (API + worker in one process, storage in
# ./dcc-data), submits a sample job with two input files and prints its result.
#   scripts/dev.sh          start (or reuse) the stack and run the sample job
#   scripts/dev.sh stop     stop what it started
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=.run
mkdir -p "$RUN"
if [ "${1:-}" = stop ]; then
  for p in dcc redis; do
    [ -f "$RUN/$p.pid" ] && kill "$(cat "$RUN/$p.pid")" 2>/dev/null && echo "stopped $p"
    rm -f "$RUN/$p.pid"
  done
  exit 0
fi
. scripts/lib.sh
ensure_deps
scripts/build-test-image.sh
echo "building dcc (first build takes a few minutes)"
cargo build --locked -p dcc-server
DCC="$CARGO_TARGET_DIR/debug/dcc"

if [ -z "${DCC_REDIS_URL:-}" ]; then
  if [ -f "$RUN/redis.port" ] && redis-cli -p "$(cat "$RUN/redis.port")" ping >/dev/null 2>&1; then
    port=$(cat "$RUN/redis.port")
  else
    port=$(free_port 6390)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$PWD/$RUN" --appendonly yes --appendfsync everysec \
      --save "" --maxmemory-policy noeviction --hash-max-listpack-value 1024 --daemonize yes --pidfile "$PWD/$RUN/redis.pid" >/dev/null
    echo "$port" > "$RUN/redis.port"
    for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    echo "redis-server on 127.0.0.1:$port"
  fi
  export DCC_REDIS_URL="redis://127.0.0.1:$port"
fi
export DCC_LISTEN=${DCC_LISTEN:-127.0.0.1:8080}
URL="http://$DCC_LISTEN"
if ! curl -sf "$URL/readyz" >/dev/null 2>&1; then
  [ -f "$RUN/dcc.pid" ] && kill "$(cat "$RUN/dcc.pid")" 2>/dev/null || true
  nohup "$DCC" server > "$RUN/dcc.log" 2>&1 &
  echo $! > "$RUN/dcc.pid"
  for _ in $(seq 1 100); do curl -sf "$URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "$URL/readyz" >/dev/null || { echo "dcc did not start; see $RUN/dcc.log" >&2; tail -20 "$RUN/dcc.log" >&2; exit 1; }
  echo "dcc server on $URL (log: $RUN/dcc.log)"
fi
# The API answers before its in-process worker has registered (and a restarted worker first
# waits for its previous life's health key to expire): a job that waits for its end is refused
# with 503 NO_WORKER until then, so wait for a healthy worker.
for _ in $(seq 1 600); do
  curl -sf "$URL/api/v1/workers" 2>/dev/null | grep -q '"health":"HEALTHY"' && break
  sleep 0.1
done
curl -sf "$URL/api/v1/workers" | grep -q '"health":"HEALTHY"' \
  || { echo "no healthy worker registered within 60 s; see $RUN/dcc.log" >&2; tail -20 "$RUN/dcc.log" >&2; exit 1; }

echo "== submitting a sample job with two input files"
printf 'hello from DCC\n' > "$RUN/greeting.txt"
head -c 1024 /dev/urandom > "$RUN/random.bin"
answer=$(curl -sS "$URL/api/v1/jobs" \
  --form-string 'job={"image":"dcc-busybox:latest","wait":true,"command":["sh","-c","cat /inputs/greeting.txt; wc -c < /inputs/data/random.bin > /outputs/size.txt; cp /inputs/data/random.bin /outputs/copy.bin"]}' \
  -F "greeting.txt=@$RUN/greeting.txt" -F "data/random.bin=@$RUN/random.bin")
echo "$answer"
id=$(echo "$answer" | sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p')
echo "== stdout of $id"
curl -sS "$URL/api/v1/jobs/$id/stdout"
echo "== outputs/size.txt"
curl -sS "$URL/api/v1/jobs/$id/outputs/size.txt"
curl -sS "$URL/api/v1/jobs/$id/outputs/copy.bin" -o "$RUN/copy.bin"
cmp -s "$RUN/random.bin" "$RUN/copy.bin" && echo "== outputs/copy.bin is byte-identical to the input"
echo
echo "The stack keeps running at $URL; stop it with: scripts/dev.sh stop"
