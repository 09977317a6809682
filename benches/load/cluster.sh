#!/usr/bin/env bash
# Reproduces the cluster figures of BENCHMARKS.md: each scenario 3 times on fresh nodes (release
# build, a fresh PostgreSQL database, rate limits off), reports as JSON under $OUT, then the median.
#
#   forwarded: two nodes, one of which has left (it holds no shard and forwards every call to
#              the other): checkout-mix through the owner, then through the forwarding node.
#   flash-sale-3: a flash sale spread round-robin over three nodes.
#   broadcast: two nodes; how soon each node's stock stream shows a restock and a sell-out made
#              through node 1, and that both then answer a checkout 409 (stock-broadcast).
#
# Usage: bash benches/load/cluster.sh [forwarded|flash-sale-3|broadcast ...] (no argument: all).
# PostgreSQL must be up at 127.0.0.1:5432 (TEST_POSTGRES_URL for another server; bash .ci/test
# starts it). The nodes, PostgreSQL and the tool share the machine's cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$(mktemp -d /tmp/storefront-cluster.XXXXXX)}"
mkdir -p "$OUT"
mkdir -p "$OUT"
SERVER="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export STOREFRONT_ADMIN_EMAIL=bench-admin@example.com STOREFRONT_ADMIN_PASSWORD=bench-admin-password
export STOREFRONT_RATE_LIMIT__ENABLED=false STOREFRONT_CLUSTER__COOKIE=bench-cluster-cookie-0123
export STOREFRONT_AUTH__SIGNING_KEYS=k1:bench-signing-key-0123456789abcdef0123456789
DB=storefront_bench
STORE="${SERVER%/*}/$DB"

cargo build --release --locked --workspace --bins
bin="$CARGO_TARGET_DIR/release"
pids=()

stop_nodes() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_nodes EXIT

# Starts nodes 1..$1 on a fresh database and waits until every one is ready.
start_nodes() {
    local i
    psql "$SERVER" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
    "$bin/storefront" migrate --store "$STORE" >/dev/null
    local seeds
    seeds=$(seq -s, -f '127.0.0.1:1940%g' 1 "$1")
    for i in $(seq "$1"); do
        "$bin/storefront" serve --no-demo-data --store "$STORE" --node-id "n$i" \
            --data-dir "$(mktemp -d "$OUT/data.XXXXXX")" --http-addr "127.0.0.1:1930$i" \
            --cluster-addr "127.0.0.1:1940$i" --seeds "$seeds" >"$OUT/node-$i.log" 2>&1 &
        pids+=($!)
    done
    for i in $(seq "$1"); do
        for _ in $(seq 150); do
            curl -sf "http://127.0.0.1:1930$i/readyz" >/dev/null && break
            sleep 0.2
        done
    done
}

admin_token() {
    curl -sf "http://127.0.0.1:19301/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$STOREFRONT_ADMIN_EMAIL\",\"password\":\"$STOREFRONT_ADMIN_PASSWORD\"}" |
        sed 's/.*"access_token":"\([^"]*\)".*/\1/'
}

# The median over 3 runs of `iterations_per_s` in the reports named $1-{1,2,3}.json.
median() {
    for n in 1 2 3; do
        grep -m1 '"iterations_per_s"' "$OUT/$1-$n.json" | tr -dc '0-9.\n'
    done | sort -n | sed -n 2p
}

mix=(--connections 64 checkout-mix --checkouts 10000 --skus 100 --shoppers 1000)

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(forwarded flash-sale-3 broadcast)
for scenario in "${scenarios[@]}"; do
    case $scenario in
    forwarded)
        for n in 1 2 3; do
            start_nodes 2
            # Node 2 hands every shard to node 1 and stays up as an edge that forwards. It
            # answers 409 until it reaches node 1 (a few heartbeats after both start).
            token=$(admin_token)
            for _ in $(seq 100); do
                curl -sf -X POST "http://127.0.0.1:19302/v1/admin/cluster/leave" \
                    -H "authorization: Bearer $token" -H 'content-type: application/json' \
                    -d '{}' >/dev/null && break
                sleep 0.2
            done
            "$bin/storefront-load" --url http://127.0.0.1:19301 --json "$OUT/local-$n.json" "${mix[@]}"
            "$bin/storefront-load" --url http://127.0.0.1:19302 --json "$OUT/forwarded-$n.json" "${mix[@]}"
            stop_nodes
        done
        echo "checkout-mix through the owner: median $(median local) iterations/s"
        echo "checkout-mix through a forwarding node: median $(median forwarded) iterations/s"
        ;;
    flash-sale-3)
        for n in 1 2 3; do
            start_nodes 3
            "$bin/storefront-load" --url http://127.0.0.1:19301,http://127.0.0.1:19302,http://127.0.0.1:19303 \
                --connections 192 --json "$OUT/flash-sale-3-$n.json" \
                flash-sale --shoppers 30000 --stock 3000
            stop_nodes
        done
        echo "flash sale over 3 nodes: median $(median flash-sale-3) attempts/s"
        ;;
    broadcast)
        # Changes spaced 250 ms apart (each one on its own), then back to back (0 s).
        for n in 1 2 3; do
            start_nodes 2
            for gap in 250ms 0s; do
                "$bin/storefront-load" --url http://127.0.0.1:19301,http://127.0.0.1:19302 \
                    --json "$OUT/broadcast-$gap-$n.json" stock-broadcast --rounds 100 --gap "$gap"
            done
            stop_nodes
        done
        ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
done
echo "reports in $OUT"
