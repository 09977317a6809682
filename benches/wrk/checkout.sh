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
source benches/wrk/node.sh

cargo build --release --locked --bin storefront
bin="$CARGO_TARGET_DIR/release/storefront"

# "requests/s p99" of a wrk run's output.
figures() {
    awk '/Requests\/sec/ {rate = $2} / 99%/ {p99 = $2} /non-2xx responses/ {bad = $3}
        END {printf "%s req/s, p99 %s, non-2xx %s\n", rate, p99, bad == "" ? 0 : bad}'
}

for s in $(seq "$series"); do
    start_node
    echo "series $s healthz: $(wrk -t2 -c64 -d"$duration" --latency "$URL/healthz" | figures)"
    for r in $(seq "$runs"); do
        echo "series $s checkout $r: $(TOKEN=$token SKU=HOT-1 wrk -t2 -c64 -d"$duration" --latency \
            -s benches/wrk/checkout.lua "$URL" | figures)"
    done
    echo "series $s resident: $(awk '/VmRSS/ {print $2, $3}' "/proc/$server/status")"
    stop_node
done
