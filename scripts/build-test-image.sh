#!/usr/bin/env bash
# Builds the local image `dcc-busybox:latest` (FROM scratch + Debian's static busybox) that the
# demo and the tests run, since no registry is reachable. Idempotent; installs busybox-static
# when it is missing.
set -euo pipefail
IMAGE=${DCC_TEST_IMAGE:-dcc-busybox:latest}
if docker image inspect "$IMAGE" >/dev/null 2>&1 && [ "${FORCE:-0}" != 1 ]; then
  exit 0
fi
BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || ! file -L "$BUSYBOX" 2>/dev/null | grep -q static; then
  if [ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q "not a dynamic"; then
    BUSYBOX=/bin/busybox
  else
    (apt-get install -y -qq busybox-static >/dev/null 2>&1 || sudo apt-get install -y -qq busybox-static >/dev/null)
    BUSYBOX=/bin/busybox
  fi
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp -L "$BUSYBOX" "$ctx/busybox"
cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/busybox", "mkdir", "-p", "/tmp"]
ENV PATH=/bin
CMD ["sh"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE"
