#!/usr/bin/env bash
# Measures start-up time, idle RSS and authenticated vs unauthenticated throughput.
set -euo pipefail
cd "$(dirname "$0")/.."
API_BIN=target/release/api-service
PIPE_BIN=target/release/pipeline-service
[ -x "$API_BIN" ] && [ -x "$PIPE_BIN" ] || { echo "build first: cargo build --release -p api-service -p pipeline-service"; exit 1; }
command -v wrk >/dev/null || { echo "install wrk (apt-get install wrk)"; exit 1; }

ROOT=bench-root-key-0123456789-abcdefghijklmnop
DATA=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$DATA"' EXIT
export CA_ROOT_API_KEY=$ROOT DATA_DIR=$DATA CONFIGS_DIR=$PWD/configs HOST=127.0.0.1 RUST_LOG=warn
export RATE_LIMIT_REQUESTS_PER_MINUTE=1000000 RATE_LIMIT_GLOBAL_REQUESTS_PER_MINUTE=100000000
export RATE_LIMIT_REQUESTS_PER_HOUR=100000000 RATE_LIMIT_GLOBAL_REQUESTS_PER_HOUR=1000000000

rss_kb() { awk '/VmRSS/ {print $2}' /proc/$1/status; }

echo "== time from exec to /health/ready 200 (ms), 10 starts"
best=999999; total=0
for i in $(seq 1 10); do
  start=$(date +%s%N)
  PORT=18900 $API_BIN >/dev/null 2>&1 & pid=$!
  sleep 0; kill -0 $pid 2>/dev/null || { echo "api-service failed to start"; exit 1; }
  until curl -sf -o /dev/null http://127.0.0.1:18900/health/ready; do sleep 0.002; done
  end=$(date +%s%N); ms=$(( (end - start) / 1000000 ))
  total=$((total + ms)); [ $ms -lt $best ] && best=$ms
  kill $pid; wait $pid 2>/dev/null || true
done
echo "api-service ready: best ${best} ms, mean $((total / 10)) ms"

PORT=18901 $API_BIN >/dev/null 2>&1 & API=$!
PORT=18902 $PIPE_BIN >/dev/null 2>&1 & PIPE=$!
until curl -sf -o /dev/null http://127.0.0.1:18901/health/ready && curl -sf -o /dev/null http://127.0.0.1:18902/health/ready; do sleep 0.01; done
sleep 1
echo "== idle RSS after start"
echo "api-service: $(rss_kb $API) kB   pipeline-service: $(rss_kb $PIPE) kB"

curl -s -X POST http://127.0.0.1:18901/api/v1/admin/bootstrap -H "X-CA-Root-Key: $ROOT" >/dev/null
KEY=$(curl -s -X POST http://127.0.0.1:18901/api/v1/organizations/onboard -H "X-CA-Root-Key: $ROOT" \
  -H 'content-type: application/json' \
  -d '{"org_slug":"bench_org","company_name":"Bench","admin_email":"b@bench.example"}' | sed -E 's/.*"api_key":"([^"]+)".*/\1/')

run_wrk() { wrk -t2 -c32 -d10s "$@" | awk '/Requests\/sec/ {print $2}'; }
echo "== throughput (requests/s, wrk -t2 -c32 -d10s)"
H=$(run_wrk http://127.0.0.1:18901/health)
A=$(run_wrk -H "X-API-Key: $KEY" http://127.0.0.1:18901/api/v1/organizations/bench_org/api-key)
W=$(run_wrk -H "X-API-Key: $KEY" http://127.0.0.1:18902/api/v1/organizations/bench_org/whoami)
P=$(run_wrk http://127.0.0.1:18902/health)
echo "api-service      GET /health (no auth):            $H"
echo "api-service      GET .../api-key (org key, 1 read): $A   ($(awk "BEGIN {printf \"%.0f\", 100*$A/$H}") % of /health)"
echo "pipeline-service GET /health (no auth):            $P"
echo "pipeline-service GET .../whoami (org key, cache hit): $W   ($(awk "BEGIN {printf \"%.0f\", 100*$W/$P}") % of /health)"
# An audited change: PUT of one price row (the audit row written before, completed after).
LUA=$(mktemp --suffix=.lua)
cat > "$LUA" <<LUAEOF
wrk.method = "PUT"
wrk.body = '{"notes": "bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
LUAEOF
U=$(wrk -t2 -c8 -d10s -s "$LUA" http://127.0.0.1:18901/api/v1/integrations/bench_org/openai/pricing/gpt-4o | awk '/Requests\/sec/ {print $2}')
echo "api-service      PUT .../pricing/gpt-4o (audited change, -c8): $U"
AUDITED=$(curl -s -H "X-API-Key: $KEY" "http://127.0.0.1:18901/api/v1/organizations/bench_org/audit-logs?action=integrations.pricing.update&limit=1" | sed -E 's/.*"total":([0-9]+).*/\1/')
echo "audit rows written for those PUTs: $AUDITED"
rm -f "$LUA"
echo "== RSS after load"
echo "api-service: $(rss_kb $API) kB   pipeline-service: $(rss_kb $PIPE) kB"
