#!/usr/bin/env bash
# The README's first command: set the machine up, start the service (API + one worker) in
# the background, and run the main job against it (upload, train, watch, download, predict).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export BOOTSTRAP_API_KEY="${BOOTSTRAP_API_KEY:-local-dev-api-key}"
export PORT="${PORT:-8080}"
export API_URL="${API_URL:-http://127.0.0.1:$PORT}"
mkdir -p var
if [ -f var/service.pid ] && kill -0 "$(cat var/service.pid)" 2>/dev/null; then
  echo "[quickstart] service already running (pid $(cat var/service.pid))"
else
  echo "[quickstart] starting API and worker; logs in var/service.log"
  # node itself (not npm) holds the pid, so `kill` reaches the process that stops API and worker.
  nohup node --import tsx services/start.ts >var/service.log 2>&1 &
  echo $! >var/service.pid
fi
for _ in $(seq 1 60); do
  if curl -fs "$API_URL/readyz" >/dev/null 2>&1; then break; fi
  kill -0 "$(cat var/service.pid)" 2>/dev/null || break
  sleep 1
done
if ! curl -fs "$API_URL/readyz" >/dev/null 2>&1; then
  echo "[quickstart] the service did not become ready; the end of var/service.log:"
  tail -20 var/service.log
  exit 1
fi
npm run --silent demo
echo "[quickstart] the service keeps running at $API_URL (API key: $BOOTSTRAP_API_KEY); stop it with: kill \$(cat var/service.pid)"
