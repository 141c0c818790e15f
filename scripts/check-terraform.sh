#!/usr/bin/env bash
# Terraform checks of the test suite, offline:
#   fmt; `terraform validate` of every module and examples/basic, initialised from a local mirror
#   of the hashicorp/aws provider (-plugin-dir); `terraform test` (plans, with a mocked aws
#   provider, of examples/basic and every module); checkov with no failed check (every
#   suppression is justified inline with `#checkov:skip=ID:reason`); the reference check; the
#   user-data rendered and checked with bash -n.
# The provider mirror: $DCC_TF_PLUGIN_DIR, else the first of /opt/tf-plugins,
# ~/.terraform.d/plugins, /usr/share/terraform/plugins that holds registry.terraform.io/hashicorp/aws.
# Without one, validate and test say SKIPPED (nothing else can install the provider offline).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/../terraform"
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
dirs=(modules/* examples/basic)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

find_plugin_dir() {
  local d
  for d in "${DCC_TF_PLUGIN_DIR:-}" /opt/tf-plugins "$HOME/.terraform.d/plugins" /usr/share/terraform/plugins; do
    if [ -n "$d" ] && [ -d "$d/registry.terraform.io/hashicorp/aws" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

if ! command -v terraform >/dev/null 2>&1; then
  echo "== terraform not installed: fmt/validate/test SKIPPED (install Terraform >= 1.9 to run them)"
else
  echo "== terraform fmt -check -recursive ($(terraform version | head -1))"
  terraform fmt -check -recursive -diff .

  if plugin_dir=$(find_plugin_dir); then
    for dir in "${dirs[@]}"; do
      if ! terraform -chdir="$dir" init -backend=false -input=false -no-color -plugin-dir="$plugin_dir" >"$log" 2>&1; then
        cat "$log"
        echo "== terraform init $dir: FAILED (provider mirror $plugin_dir)"
        exit 1
      fi
      if ! terraform -chdir="$dir" validate -no-color >"$log" 2>&1; then
        cat "$log"
        echo "== terraform validate $dir: FAILED"
        exit 1
      fi
      echo "== terraform validate $dir: ok"
    done
    for dir in "${dirs[@]}"; do
      if ! terraform -chdir="$dir" test -no-color >"$log" 2>&1; then
        grep -v '^  - ' "$log"
        echo "== terraform test $dir: FAILED"
        exit 1
      fi
      echo "== terraform test $dir: $(grep -E '^(Success|Failure)!' "$log") [$(grep -cE '^  run ".*"\.\.\. pass$' "$log") runs: $(grep -oE '^  run "[^"]+"' "$log" | sed 's/^  run //' | tr -d '"' | paste -sd, -)]"
    done
  else
    echo "== terraform validate: SKIPPED — no local hashicorp/aws provider mirror (set DCC_TF_PLUGIN_DIR to a folder holding registry.terraform.io/hashicorp/aws/<version>/<os_arch>/)."
    echo "   Where the registry is reachable: terraform -chdir=terraform/<dir> init -backend=false && terraform -chdir=terraform/<dir> validate && terraform -chdir=terraform/<dir> test"
    echo "== terraform test: SKIPPED (needs the provider too)"
  fi
fi

venv="$HOME/.cache/dcc/checkov"
if [ ! -x "$venv/bin/checkov" ]; then
  echo "installing checkov into $venv (pip)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'checkov>=3.3,<4'
fi
echo "== checkov"
# checkov exits 0 on parse errors, so fmt above is what catches broken HCL.
"$venv/bin/checkov" -d . --framework terraform --quiet --compact --skip-download --skip-path '\.terraform'
echo "== references (offline: declared variables, locals, resources, module outputs and arguments)"
"$venv/bin/python" ../scripts/tf-references.py .

echo "== user-data renders (terraform console, offline) and is valid bash"
if command -v terraform >/dev/null 2>&1; then
  tpl="$PWD/modules/workers/templates/user-data.sh.tftpl"
  work=$(mktemp -d)
  common='bucket="b", artifact_key="artifacts/dcc", region="eu-west-1", auth_parameter="/dcc/redis", redis_host="r.example", dcc_storage="s3://b/dcc/", retention="7d", durability="replicas:1", log_group="/dcc/t"'
  for case in 'server: role="server", gpu=false, api_keys_parameter="/dcc/api-keys", notify_parameter="/dcc/notify-secret", registry_auth_parameter="", artifact_sha256="", extra_env={DISABLE_WORKER="true"}, redis_scheme="rediss"' \
              'cpu-worker: role="worker", gpu=false, api_keys_parameter="", notify_parameter="", registry_auth_parameter="/dcc/registry-auth", artifact_sha256="0123", extra_env={DCC_GPUS="0"}, redis_scheme="rediss+cluster"' \
              'gpu-worker: role="worker", gpu=true, api_keys_parameter="", notify_parameter="", registry_auth_parameter="", artifact_sha256="", extra_env={DCC_GPU_MODE="auto"}, redis_scheme="rediss"'; do
    label=${case%%:*}
    vars=${case#*: }
    expr="jsonencode(templatefile(\"$tpl\", {$vars, $common}))"
    echo "$expr" | (cd "$work" && terraform console) | python3 -c 'import json,sys; print(json.loads(json.loads(sys.stdin.read())))' > "$work/user-data.sh"
    bash -n "$work/user-data.sh"
    grep -q '^ExecStart=/usr/local/bin/dcc ' "$work/user-data.sh"
    case $label in
      server)
        grep -q '^DCC_API_KEYS=' "$work/user-data.sh"
        grep -q '^DCC_NOTIFY_SECRET=' "$work/user-data.sh"
        if grep -qE 'install -y docker|docker\.service' "$work/user-data.sh"; then echo "server user-data installs Docker"; exit 1; fi ;;
      cpu-worker)
        grep -q 'sha256sum -c' "$work/user-data.sh"
        grep -q '^DCC_REDIS_URL=rediss+cluster://:${token}@r.example:6379$' "$work/user-data.sh"
        if grep -q 'nvidia-ctk' "$work/user-data.sh"; then echo "CPU user-data has NVIDIA steps"; exit 1; fi
        if grep -q 'NOTIFY_SECRET' "$work/user-data.sh"; then echo "worker user-data reads the webhook secret"; exit 1; fi
        grep -q '^DCC_REGISTRY_AUTH_FILE=/etc/dcc/registry-auth.json' "$work/user-data.sh" ;;
      gpu-worker)
        grep -q 'nvidia-ctk runtime configure --runtime=docker' "$work/user-data.sh"
        # nvidia-smi is checked before dcc starts.
        [ "$(grep -n 'if ! nvidia-smi' "$work/user-data.sh" | cut -d: -f1)" -lt "$(grep -n 'systemctl enable --now dcc' "$work/user-data.sh" | cut -d: -f1)" ] ;;
    esac
    echo "   $label: $(wc -l < "$work/user-data.sh") lines, bash -n ok"
  done
  rm -rf "$work"
fi
echo "== terraform checks: all passed"
