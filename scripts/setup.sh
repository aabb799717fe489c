#!/usr/bin/env bash
# Idempotent setup: creates .venv, installs pinned CPU torch, Mitsuba and both packages,
# and Debian's libllvm19 (needed by Mitsuba's LLVM variants) where we are root.
# Re-running is cheap: a stamp file records the hash of what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.setup-stamp
want=$(cat pyproject.toml packages/*/pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
# EXTRAS: optional extras of packages/render besides ray, comma-separated (e.g. blenderproc).
# Extras installed before are kept (recorded in the stamp's second line).
had=$( [ -f "$STAMP" ] && sed -n 2p "$STAMP" || true)
extras=$(echo "ray,${had},${EXTRAS:-}" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)

llvm_ok() { compgen -G "/usr/lib/*/libLLVM-19.so*" >/dev/null || compgen -G "/usr/lib/llvm-19/lib/libLLVM*.so*" >/dev/null; }
if ! llvm_ok && [ -z "${DRJIT_LIBLLVM_PATH:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing Debian's libllvm19 (Mitsuba LLVM variants)"
    (apt-get install -y -q libllvm19 >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q libllvm19 >/dev/null)
  else
    echo "[setup] NOTE: libllvm19 is missing and we are not root. Mitsuba's LLVM variants need it:" >&2
    echo "        sudo apt-get install libllvm19   (or set DRJIT_LIBLLVM_PATH to a libLLVM >= 17)." >&2
    echo "        Until then rendering uses the slower scalar variant (see polar_render/variants.py)." >&2
  fi
fi

if [ -f "$STAMP" ] && [ "$(sed -n 1p "$STAMP")" = "$want" ] && [ "$had" = "$extras" ]; then exit 0; fi
[ -x $VENV/bin/python ] || "$PY" -m venv $VENV
echo "[setup] installing Python packages into $VENV (first run takes a few minutes)"
# pip's exit status is kept; only noise (this machine's absent local indexes, setuptools'
# editable-install banner) is filtered.
pip_install() {
  $VENV/bin/python -m pip install -q "$@" 2>&1 | { grep -v -e "is ignored: it is neither" -e "BuildBackendWarning" -e "^  " -e "with strategy" || true; }
  return "${PIPESTATUS[0]}"
}
pip_install --upgrade pip setuptools wheel
pip_install "torch==2.13.0"   # pinned CPU build first, so nothing later pulls a CUDA build
pip_install -e "packages/render[$extras]" -e packages/detect -e ".[dev]"
printf "%s\n%s\n" "$want" "$extras" > "$STAMP"
echo "[setup] done"
