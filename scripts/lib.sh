# Shared by scripts/dev.sh and scripts/test.sh: installs what is missing on a Debian machine and
# starts the Docker daemon when it is installed but down. Sourced, not run.

# Runs a command as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root and sudo is missing" >&2; return 1; fi
}

# Installs the Debian packages whose commands are missing: apt_need COMMAND=PACKAGE ...
apt_need() {
  local missing=()
  for pair in "$@"; do
    local cmd=${pair%%=*} pkg=${pair#*=}
    command -v "$cmd" >/dev/null 2>&1 || [ -x "/bin/$cmd" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt)"
    as_root apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Makes sure a Docker Engine answers; starts dockerd when it is installed but not running.
ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  apt_need docker=docker.io dockerd=docker.io
  if ! docker info >/dev/null 2>&1; then
    echo "starting dockerd"
    if command -v systemctl >/dev/null && systemctl list-unit-files docker.service >/dev/null 2>&1 \
       && as_root systemctl start docker 2>/dev/null; then :; else
      as_root sh -c 'nohup dockerd >/var/log/dcc-dockerd.log 2>&1 &'
    fi
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "error: the Docker daemon did not come up (see /var/log/dcc-dockerd.log)" >&2
    return 1
  fi
}

# Makes sure cargo is there (rustup is not reachable from our machines; Debian's rustc is too old).
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "error: cargo (Rust >= 1.95) is needed: https://rustup.rs" >&2; return 1; }
}

# Everything DCC needs on the machine.
ensure_deps() {
  apt_need redis-server=redis-server redis-cli=redis-tools busybox=busybox-static curl=curl openssl=openssl
  ensure_docker
  ensure_rust
  ensure_moto
  ensure_schemathesis
  # Build outputs live outside the checkout, so fresh clones (CI) reuse them.
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/dcc/target}
  mkdir -p "$CARGO_TARGET_DIR"
}

# Prints a free loopback TCP port, starting the search at $1.
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

# moto server (S3 API) for the S3 tests, in its own virtualenv under ~/.cache/dcc/moto.
ensure_moto() {
  local venv="$HOME/.cache/dcc/moto"
  [ -x "$venv/bin/moto_server" ] && return 0
  apt_need python3=python3
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    apt_need __venv_marker=python3-venv
  fi
  echo "installing moto[server] into $venv (pip)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]>=5.1,<6'
}

# schemathesis (API fuzzing against the served OpenAPI), in its own virtualenv.
ensure_schemathesis() {
  local venv="$HOME/.cache/dcc/schemathesis"
  [ -x "$venv/bin/schemathesis" ] && return 0
  echo "installing schemathesis into $venv (pip)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis>=4,<5'
}
