#!/usr/bin/env bash
# Instructions per checkout of a hot SKU (callgrind), for comparing builds on a machine whose
# speed wanders (as this VM's does: its requests/s move by a third within an hour, its
# instruction counts do not). A fresh node (as in checkout.sh) runs under valgrind with
# instrumentation off while WARM seconds of checkouts fill it (100 s takes it past 25,000, where
# the bounded ledgers and id sets it keeps are full and forgetting); then 30 s of checkouts
# (`wrk -c4`) are counted. Prints the node's instructions per checkout, and those of its main
# parts (inclusive; the parts overlap: the edge includes the order's reply, not its saga). fjall's
# workers wait for work in a loop whose count follows time, not work: compare builds without them.
#
# Usage: [BIN=path/to/storefront] bash benches/wrk/instructions.sh [WARM_SECONDS]   (default 100)
# Needs wrk and valgrind (Debian's packages). Under valgrind the node runs one thread at a time,
# and SHA-256 runs without the CPU's SHA instructions.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
warm=${1:-100}
source benches/wrk/node.sh

# BIN=path measures that binary instead of building this checkout's (to compare two builds).
if [ -n "${BIN:-}" ]; then
    bin=$BIN
else
    cargo build --release --locked --bin storefront
    bin="$CARGO_TARGET_DIR/release/storefront"
fi
out=$(mktemp -d /tmp/storefront-callgrind.XXXXXX)

checkouts() {
    TOKEN=$token SKU=HOT-1 wrk -t1 -c"$1" -d"$2" -s benches/wrk/checkout.lua "$URL"
}

start_node valgrind --tool=callgrind --separate-threads=yes --instr-atstart=no \
    --callgrind-out-file="$out/callgrind.out"
echo "warm-up: $(checkouts 16 "${warm}s" | awk '/requests in/ {print $1}') checkouts"
callgrind_control -i on "$server" >/dev/null
callgrind_control -z "$server" >/dev/null
measured=$(checkouts 4 30s)
callgrind_control -d "$server" >/dev/null
stop_node
n=$(echo "$measured" | awk '/requests in/ {print $1}')
echo "counted: $n checkouts, $(echo "$measured" | awk '/non-2xx/ {print $3}') not 2xx"

# One profile per thread (a part's functions, inlined across crates, are listed under many
# entries; a thread's total is exact). Each thread's listing starts with a THREAD line.
for profile in "$out"/callgrind.out.1-*; do
    echo "THREAD $profile"
    callgrind_annotate --inclusive=yes --threshold=100 "$profile" 2>/dev/null
done >"$out/inclusive.txt"
# Per part, the largest inclusive count of a function whose name contains its pattern, summed
# over the threads; the store writer, fjall's workers and the node are whole threads' totals.
awk -v n="$n" '
    BEGIN {
        parts["edge (hyper, warp, the handler)"] = "storefront_http::serve::serve::{{closure}}::{{closure}}"
        parts["checkout handler (before the order)"] = "storefront_http::api::checkout::place::{{closure}}"
        parts["order actor"] = "OrderActor as ractor::actor::Actor>::handle::{{closure}}"
        parts["order recovery"] = "storefront_actors::journal::Journal::recover"
        parts["saga steps"] = "storefront_actors::order::saga::StepRunner::run::{{closure}}"
        parts["SKU actor"] = "SkuStockActor as ractor::actor::Actor>::handle::{{closure}}"
        parts["events to the outbox"] = "storefront_events::event::CloudEvent::to_json"
        parts["idempotency record"] = "storefront_http::idempotency::IdempotencyKeys::finish"
        threads["store writer thread"] = "storefront_storage::embedded::Writer::run"
        threads["fjall flush and compaction workers"] = "fjall::worker_pool::WorkerPool::start"
    }
    function end_thread() {
        for (p in parts) { total[p] += best[p]; best[p] = 0 }
        for (t in threads) if (is[t]) { total[t] += thread_total; is[t] = 0 }
        total["node"] += thread_total
        thread_total = 0
    }
    /^THREAD / { end_thread(); next }
    /PROGRAM TOTALS/ { ir = $1; gsub(/,/, "", ir); thread_total = ir + 0; next }
    match($0, /^ *[0-9,]+ /) {
        ir = substr($0, RSTART, RLENGTH); gsub(/[ ,]/, "", ir)
        for (p in parts) if (index($0, parts[p]) && ir + 0 > best[p]) best[p] = ir + 0
        for (t in threads) if (index($0, threads[t])) is[t] = 1
    }
    END {
        end_thread()
        for (p in total) printf "%12.0f  %s\n", total[p] / n, p
        split("edge (hyper, warp, the handler)|order actor|order recovery|saga steps|SKU actor|store writer thread", apart, "|")
        for (i in apart) sum += total[apart[i]]
        printf "%12.0f  %s\n", sum / n, "sum of the parts that do not overlap (edge, order actor and recovery, saga steps, SKU actor, writer)"
    }
' "$out/inclusive.txt" | sort -rn | sed '1s/$/   (instructions per checkout)/'
rm -rf "$out"
