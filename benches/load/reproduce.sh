#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md: each scenario 3 times, each run on a fresh node
# (release build, fresh data dir, rate limits off), reports as JSON under $OUT, then the median.
#
# Usage: bash benches/load/reproduce.sh [flash-sale|browse|checkout-mix|connections|connections-open|search|search-typos|hot-cold ...]
# (no argument: all). PostgreSQL and Redis must be up for flash-sale's --compare (bash .ci/test
# starts them). The node and the tool share the machine's cores, as in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$(mktemp -d /tmp/storefront-load.XXXXXX)}"
ADDR=127.0.0.1:18180
export STOREFRONT_ADMIN_EMAIL=bench-admin@example.com STOREFRONT_ADMIN_PASSWORD=bench-admin-password

cargo build --release --locked --workspace --bins
bin="$CARGO_TARGET_DIR/release"

# Waits until the node answers /readyz, polling every 0.2 s at most $1 times.
wait_ready() {
    for _ in $(seq "$1"); do
        curl -sf "http://$ADDR/readyz" >/dev/null && return
        sleep 0.2
    done
}

# Starts a fresh node (demo catalog; a copy of $TEMPLATE's data when set), runs the tool with the
# given arguments, stops the node.
run_once() {
    local report=$1
    shift
    local data
    data=$(mktemp -d "$OUT/data.XXXXXX")
    if [ -n "${TEMPLATE:-}" ]; then cp -a "$TEMPLATE/." "$data/"; fi
    STOREFRONT_RATE_LIMIT__ENABLED=false "$bin/storefront" serve --data-dir "$data" \
        --http-addr "$ADDR" >"$data.log" 2>&1 &
    local server=$!
    wait_ready 1500
    "$bin/storefront-load" --url "http://$ADDR" --server-pid "$server" --json "$report" "$@" ||
        echo "run failed: $report" >&2
    kill "$server"
    wait "$server" || true
    rm -rf "$data"
}

# The median over 3 runs of `iterations_per_s` in the reports named $1-{1,2,3}.json.
median() {
    for n in 1 2 3; do
        grep -m1 '"iterations_per_s"' "$OUT/$1-$n.json" | tr -dc '0-9.\n'
    done | sort -n | sed -n 2p
}

# A data dir holding the 100,000-product demo catalog, seeded once, copied for each search run.
seed_large_catalog() {
    TEMPLATE=$(mktemp -d "$OUT/catalog-100k.XXXXXX")
    STOREFRONT_DEMO_PRODUCTS=100000 "$bin/storefront" serve --data-dir "$TEMPLATE" \
        --http-addr "$ADDR" >"$TEMPLATE.log" 2>&1 &
    local server=$!
    wait_ready 3000
    kill "$server"
    wait "$server" || true
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(flash-sale browse checkout-mix connections connections-open search search-typos)
for scenario in "${scenarios[@]}"; do
    case $scenario in
    search*) [ -n "${TEMPLATE:-}" ] || seed_large_catalog ;;
    *) unset TEMPLATE ;;
    esac
    for n in 1 2 3; do
        case $scenario in
        flash-sale) run_once "$OUT/$scenario-$n.json" --connections 256 --report "$OUT/$scenario-$n.html" \
            flash-sale --shoppers 100000 --stock 10000 --compare --workers 64 ;;
        browse) run_once "$OUT/$scenario-$n.json" --connections 256 \
            browse --requests 500000 --search-share 0.2 ;;
        checkout-mix) run_once "$OUT/$scenario-$n.json" --connections 256 \
            checkout-mix --checkouts 20000 --skus 100 --shoppers 1000 ;;
        connections) run_once "$OUT/$scenario-$n.json" --connections 10000 \
            browse --requests 300000 --search-share 0 ;;
        connections-open) run_once "$OUT/$scenario-$n.json" --connections 10000 --rate 5000 \
            --duration 30s browse --requests 150000 --search-share 0 ;;
        search) run_once "$OUT/$scenario-$n.json" --connections 100 --rate 1000 \
            --duration 30s search --searches 30000 ;;
        search-typos) run_once "$OUT/$scenario-$n.json" --connections 100 --rate 1000 \
            --duration 30s search --searches 30000 --typo-share 0.2 ;;
        hot-cold) run_once "$OUT/$scenario-$n.json" --connections 2048 --duration 10s \
            hot-cold --cold-connections 16 ;;
        *) echo "unknown scenario $scenario" >&2; exit 2 ;;
        esac
    done
    echo "$scenario: median $(median "$scenario") iterations/s (reports in $OUT)"
done
