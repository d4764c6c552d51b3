#!/usr/bin/env bash
# Brings a fresh Debian machine (or a CI clone) to a runnable state: system packages,
# PostgreSQL and Redis up, npm packages, the generated Prisma client, the native BLAS
# addon where it builds, the database migrated. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# python3-torch (Debian's; PyPI is out of reach) runs the PyTorch references that the
# engine's numerics are tested against live, beside the committed goldens.
apt_packages=(libopenblas-dev python3-torch)
command -v psql >/dev/null || apt_packages+=(postgresql)
# Debian's chromium runs the dashboard's browser tests (playwright-core drives it; no browser download).
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)
command -v redis-server >/dev/null || apt_packages+=(redis-server)
missing=()
for package in "${apt_packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 30); do redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 && break; sleep 1; done
fi

# A re-run skips the reinstall when the lock file has not changed since the last one.
lock_stamp=node_modules/.installed-lock-sha256
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$(sha256sum package-lock.json | cut -d' ' -f1)" ]; then
  log "npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  sha256sum package-lock.json | cut -d' ' -f1 >"$lock_stamp"
else
  log "npm packages up to date"
fi
log "generating the Prisma client"
bash scripts/prisma.sh generate >/dev/null
log "building the OpenBLAS addon (the engine falls back to plain wasm without it)"
bash scripts/build-native.sh

database_url="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/lora}"
database_name="$(node -e 'console.log(new URL(process.argv[1]).pathname.slice(1))' "$database_url")"
admin_url="$(node -e 'const u = new URL(process.argv[1]); u.pathname = "/postgres"; console.log(u.toString())' "$database_url")"
if [ "$(psql "$admin_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database_name'")" != 1 ]; then
  log "creating database $database_name"
  psql "$admin_url" -qc "CREATE DATABASE \"$database_name\""
fi
log "migrating $database_name"
DATABASE_URL="$database_url" bash scripts/prisma.sh migrate deploy >/dev/null
log "ready"
