#!/usr/bin/env bash
# The real GPU check, for the lent GPU machine (see ../shared/gpu/README.md). Here first:
#   cargo build --release -p dcc-server && ../shared/gpu/pack.sh "$CARGO_TARGET_DIR/release/dcc" scripts/gpu-e2e.sh
# then, with the device tool: carry [".gpu"], command:
#   bash .gpu/start.sh && bash .gpu/bin/gpu-e2e.sh
# It starts `dcc server` (API + worker, GPU mode `devices`: the machine has the driver but no
# NVIDIA container toolkit), builds a small CUDA program with nvcc, runs it as a 1-GPU job next to
# `nvidia-smi -L`, runs a CPU job alongside, checks both, and writes the results under $OUT.
set -euo pipefail
export PATH="/tmp/gpurt/bin:$(cd "$(dirname "$0")" && pwd):/usr/local/nvidia/bin:/usr/local/cuda/bin:$PATH"
export LD_LIBRARY_PATH=/tmp/gpurt/lib
OUT=${OUT:-/tmp/gpu-e2e}
mkdir -p "$OUT" /tmp/dcc-gpu
cd /tmp/dcc-gpu

cat > vecadd.cu <<'CU'
#include <cstdio>
__global__ void add(const float *a, const float *b, float *c, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}
int main() {
  const int n = 1 << 20;
  float *a, *b, *c;
  cudaMallocManaged(&a, n * sizeof(float)); cudaMallocManaged(&b, n * sizeof(float)); cudaMallocManaged(&c, n * sizeof(float));
  for (int i = 0; i < n; i++) { a[i] = i; b[i] = 2 * i; }
  add<<<(n + 255) / 256, 256>>>(a, b, c, n);
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) { printf("CUDA error: %s\n", cudaGetErrorString(e)); return 1; }
  for (int i = 0; i < n; i++) if (c[i] != 3.0f * i) { printf("wrong at %d\n", i); return 2; }
  cudaDeviceProp p; cudaGetDeviceProperties(&p, 0);
  printf("vecadd ok on %s (%d elements)\n", p.name, n);
  return 0;
}
CU
nvcc -O2 -o vecadd vecadd.cu

export DCC_REDIS_URL=redis://127.0.0.1:6379 DCC_REDIS_PREFIX=gpue2e DCC_STORAGE=/tmp/dcc-gpu/data \
  DCC_LISTEN=127.0.0.1:8090 DCC_WORKER_ID=gpu-e2e DCC_GPU_MODE=devices \
  DCC_GPU_DRIVER_BINDS=/usr/local/nvidia,/usr/lib/x86_64-linux-gnu,/lib64 \
  DCC_GPU_LD_LIBRARY_PATH=/usr/local/nvidia/lib64:/usr/lib/x86_64-linux-gnu
dcc server > "$OUT/dcc.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8090/readyz >/dev/null && break; sleep 0.1; done
# A job that waits for its end is refused (503 NO_WORKER) until the in-process worker registers.
for _ in $(seq 1 300); do curl -sf http://127.0.0.1:8090/api/v1/workers | grep -q '"health":"HEALTHY"' && break; sleep 0.1; done
curl -s http://127.0.0.1:8090/api/v1/workers | tee "$OUT/workers.json"; echo

# A CPU job alongside, then the GPU job (waits for its result).
cpu=$(curl -s http://127.0.0.1:8090/api/v1/jobs -H 'content-type: application/json' -d '{"image":"dcc-busybox:gpu","command":["sh","-c","echo cpu side; sleep 2"]}')
start=$(date +%s.%N)
curl -s http://127.0.0.1:8090/api/v1/jobs \
  --form-string 'job={"image":"dcc-busybox:gpu","wait":true,"parameters":{"gpus":1},"command":["sh","-c","/usr/local/nvidia/bin/nvidia-smi -L && /inputs/vecadd"]}' \
  -F "vecadd=@vecadd" > "$OUT/gpu-job.json"
end=$(date +%s.%N)
gid=$(sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p' "$OUT/gpu-job.json")
curl -s "http://127.0.0.1:8090/api/v1/jobs/$gid/stdout" | tee "$OUT/gpu-stdout.txt"
curl -s "http://127.0.0.1:8090/api/v1/jobs/$gid/stderr" > "$OUT/gpu-stderr.txt"
cid=$(echo "$cpu" | sed -n 's/.*"jobId":"\([^"]*\)".*/\1/p')
curl -s "http://127.0.0.1:8090/api/v1/jobs/$cid/wait?timeoutSecs=60" > "$OUT/cpu-job.json"
echo "GPU job wall time (submit to answer): $(echo "$end - $start" | bc) s" | tee "$OUT/timing.txt"
grep -o '"status":"[a-z_]*"' "$OUT/gpu-job.json" | head -1
grep -o '"stats":{[^}]*}' "$OUT/gpu-job.json" | tee -a "$OUT/timing.txt"
grep -q '"status":"succeeded"' "$OUT/gpu-job.json" || { echo "GPU job did not succeed"; cat "$OUT/gpu-job.json"; exit 1; }
grep -q '^GPU 0:' "$OUT/gpu-stdout.txt" || { echo "nvidia-smi -L did not name the GPU"; exit 1; }
grep -q 'vecadd ok' "$OUT/gpu-stdout.txt" || { echo "the CUDA program did not run"; exit 1; }
grep -q '"status":"succeeded"' "$OUT/cpu-job.json" || { echo "the CPU job did not succeed"; exit 1; }
echo "GPU e2e: OK"
