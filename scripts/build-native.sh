#!/usr/bin/env bash
# Builds the OpenBLAS addon (services/trainer/native) that routes the wasm backend's matrix
# products to BLAS. Never fails setup: without a compiler, node headers or libopenblas-dev it
# warns and exits 0, and the trainer runs on plain wasm (it logs that once at start).
set -uo pipefail
cd "$(dirname "$0")/../services/trainer/native"

warn() { printf '[build-native] WARNING: %s; the trainer will use plain wasm (several times slower)\n' "$*" >&2; }

if [ ! -e /usr/include/cblas.h ] && [ ! -e "/usr/include/$(gcc -dumpmachine 2>/dev/null)/cblas.h" ]; then
  warn "cblas.h not found: install libopenblas-dev"
  exit 0
fi
node_gyp="$(dirname "$(command -v npm)")/../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
[ -f "$node_gyp" ] || node_gyp=/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js
if [ ! -f "$node_gyp" ]; then
  warn "node-gyp not found next to npm"
  exit 0
fi
# Node's own headers when the distribution ships them, so the build needs no download.
node_prefix="$(dirname "$(dirname "$(command -v node)")")"
nodedir_args=()
[ -f "$node_prefix/include/node/node_api.h" ] && nodedir_args=(--nodedir="$node_prefix")

if ! log="$(node "$node_gyp" rebuild "${nodedir_args[@]}" 2>&1)"; then
  printf '%s\n' "$log" | tail -20 >&2
  warn "node-gyp could not build the addon"
  exit 0
fi
if ! node -e 'require(process.argv[1]).threads()' "$PWD/build/Release/blas.node" 2>/dev/null; then
  warn "the addon built but does not load"
  exit 0
fi
printf '[build-native] built %s\n' "$PWD/build/Release/blas.node"
