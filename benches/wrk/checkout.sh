#!/usr/bin/env bash
# The `wrk` series of BENCHMARKS.md ("Checkout of a hot SKU, and GET /healthz on the same node"):
# per series a fresh node (release build, fresh data dir, rate limits off) with one product of
# 50,000,000 units and one customer; `GET /healthz`, then $RUNS consecutive checkout runs.
#
# Usage: bash benches/wrk/checkout.sh [SERIES] [RUNS] [DURATION]   (defaults: 3 series, 3 runs, 10s)
# Needs wrk (Debian's package). Prints one line per run: the series, what ran, requests/s, p99.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
series=${1:-3} runs=${2:-3} duration=${3:-10s}
ADDR=127.0.0.1:18180 URL=http://127.0.0.1:18180
export STOREFRONT_ADMIN_EMAIL=bench-admin@example.com STOREFRONT_ADMIN_PASSWORD=bench-admin-password

cargo build --release --locked --bin storefront
bin="$CARGO_TARGET_DIR/release/storefront"

# The access token of a login.
login() {
    curl -sf "$URL/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

# "requests/s p99" of a wrk run's output.
figures() {
    awk '/Requests\/sec/ {rate = $2} / 99%/ {p99 = $2} /non-2xx responses/ {bad = $3}
        END {printf "%s req/s, p99 %s, non-2xx %s\n", rate, p99, bad == "" ? 0 : bad}'
}

for s in $(seq "$series"); do
    data=$(mktemp -d /tmp/storefront-wrk.XXXXXX)
    STOREFRONT_RATE_LIMIT__ENABLED=false "$bin" serve --data-dir "$data" --http-addr "$ADDR" \
        >"$data.log" 2>&1 &
    server=$!
    # Ready within 5 minutes, or the node's log says why not (a node that exits, its port taken
    # say, is not waited for).
    for _ in $(seq 1500); do
        curl -sf "$URL/readyz" >/dev/null && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.2
    done
    if ! curl -sf "$URL/readyz" >/dev/null; then
        echo "the node did not become ready: $data.log" >&2
        tail -5 "$data.log" >&2
        kill "$server" 2>/dev/null || true
        exit 1
    fi
    admin=$(login "$STOREFRONT_ADMIN_EMAIL" "$STOREFRONT_ADMIN_PASSWORD")
    curl -sf "$URL/v1/admin/products" -H "authorization: Bearer $admin" \
        -H 'content-type: application/json' -o /dev/null -d '{"sku":"HOT-1","name":"Hot","description":"hot",
        "category":"drops","price":{"amount":"10.00","currency":"USD"},"initial_stock":50000000}'
    curl -sf "$URL/v1/auth/register" -H 'content-type: application/json' -o /dev/null \
        -d '{"email":"shopper@example.com","password":"shopper-password"}'
    token=$(login shopper@example.com shopper-password)
    echo "series $s healthz: $(wrk -t2 -c64 -d"$duration" --latency "$URL/healthz" | figures)"
    for r in $(seq "$runs"); do
        echo "series $s checkout $r: $(TOKEN=$token SKU=HOT-1 wrk -t2 -c64 -d"$duration" --latency \
            -s benches/wrk/checkout.lua "$URL" | figures)"
    done
    echo "series $s resident: $(awk '/VmRSS/ {print $2, $3}' "/proc/$server/status")"
    kill "$server"
    wait "$server" || true
    rm -rf "$data" "$data.log"
done
