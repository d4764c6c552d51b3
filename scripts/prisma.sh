#!/usr/bin/env bash
# Runs the Prisma CLI without its native engines, which it would otherwise try to
# download: the WebAssembly schema engine and the query compiler do the work instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export PRISMA_QUERY_ENGINE_LIBRARY="${PRISMA_QUERY_ENGINE_LIBRARY:-/dev/null}"
export PRISMA_SCHEMA_ENGINE_BINARY="${PRISMA_SCHEMA_ENGINE_BINARY:-/bin/false}"
export PRISMA_HIDE_UPDATE_MESSAGE=1
export CHECKPOINT_DISABLE=1
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/lora}"
exec node_modules/.bin/prisma "$@"
