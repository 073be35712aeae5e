#!/usr/bin/env bash
# Install COREA's requirements into the current Python environment.
#
#   bash scripts/install.sh          # the app, the `corea` command and the library
#   bash scripts/install.sh --test   # plus pytest, Playwright, Debian's Chromium and nginx for the tests
#
# 1. torch==2.13.0 first (the CPU build, from PyTorch's CPU index), so that nothing later pulls a
#    multi-GB CUDA build.
# 2. llama-cpp-python compiles from source. A default build targets the build machine's exact CPU
#    (GGML_NATIVE) and can die with "illegal instruction" on a VM that hides some of those
#    instructions; we build a portable binary with explicit SIMD flags taken from /proc/cpuinfo.
#    Override with CMAKE_ARGS=... if you know better (e.g. -DGGML_CUDA=on on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# PyPI's Linux torch wheel is the CUDA build (several GB). The CPU build comes from PyTorch's own
# index; TORCH_INDEX_URL overrides it (e.g. https://download.pytorch.org/whl/cu128 for a GPU). If
# that index cannot be reached, pip's configured index is used (it may serve the CUDA build).
have_torch=$($PY -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true)
if [ "${have_torch%%+*}" = "2.13.0" ]; then
  echo "torch $have_torch already installed"
elif ! $PY -m pip install --retries 1 --timeout 20 \
        --index-url "${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" "torch==2.13.0"; then
  echo "torch: ${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu} unreachable; using pip's index" >&2
  $PY -m pip install "torch==2.13.0"
fi

if [ -z "${CMAKE_ARGS:-}" ]; then
  flags="-DGGML_NATIVE=OFF"
  cpu=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
  for f in avx avx2 fma f16c; do
    if grep -qw "$f" <<<"$cpu"; then flags="$flags -DGGML_${f^^}=ON"; else flags="$flags -DGGML_${f^^}=OFF"; fi
  done
  if grep -qw avx512f <<<"$cpu"; then
    flags="$flags -DGGML_AVX512=ON"
    grep -qw avx512_vbmi <<<"$cpu" && flags="$flags -DGGML_AVX512_VBMI=ON"
    grep -qw avx512_vnni <<<"$cpu" && flags="$flags -DGGML_AVX512_VNNI=ON"
  fi
  export CMAKE_ARGS="$flags"
fi
echo "llama-cpp-python build flags: CMAKE_ARGS=$CMAKE_ARGS"
$PY -m pip install -r requirements.txt
# COREA itself, editable, so that the `corea` command exists (its dependencies are the pins above)
$PY -m pip install --no-deps -e .

if [ "${1:-}" = "--test" ]; then
  $PY -m pip install -r requirements-test.txt
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-color-emoji
    else
      echo "Chromium is missing: install Debian's 'chromium' package for the browser test" >&2
    fi
  fi
  # nginx: tests/test_sharing.py puts a real reverse proxy in front of the app (skipped without)
  if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
    else
      echo "nginx is missing: install Debian's 'nginx' package for the reverse-proxy test" >&2
    fi
  fi
fi
