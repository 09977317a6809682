#!/usr/bin/env bash
# Reproduces the events-out figures of BENCHMARKS.md (Step 5), each the median of 3 runs on a
# release build, against the local RabbitMQ (a virtual host per run):
#   relay        the outbox relay emptying 200,000 events into the broker (persistent messages,
#                publisher confirms, the notification queue bound): relay-throughput
#   checkout     checkout-mix on one node with the relay off and on, alternating, five runs
#                each (fresh node each run; the median is the third)
#   mail         a 10,000-order flash sale on one node with the relay and `storefront notify`
#                sending to a local SMTP server: confirmation to mail accepted, p50 and p99 (the
#                sale opens once the 10,001 welcome mails of the set-up are out)
#
# Usage: bash benches/load/events.sh [relay|checkout|mail ...] (no argument: all). Needs
# rabbitmqctl, and Debian's python3-aiosmtpd for `mail` (bash .ci/test installs both).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="${OUT:-$(mktemp -d /tmp/storefront-events.XXXXXX)}"
ADDR=127.0.0.1:18280
SMTP_PORT=18225
export STOREFRONT_ADMIN_EMAIL=bench-admin@example.com STOREFRONT_ADMIN_PASSWORD=bench-admin-password

cargo build --release --locked -p storefront -p storefront-benches --bins
bin="$CARGO_TARGET_DIR/release"

fresh_vhost() {
    rabbitmqctl -q delete_vhost "$1" >/dev/null 2>&1 || true
    rabbitmqctl -q add_vhost "$1" >/dev/null
    rabbitmqctl -q set_permissions -p "$1" guest '.*' '.*' '.*' >/dev/null
}

# Starts a fresh node with the given extra environment; sets $server and $data.
start_node() {
    data=$(mktemp -d "$OUT/data.XXXXXX")
    env "$@" STOREFRONT_RATE_LIMIT__ENABLED=false "$bin/storefront" serve --no-demo-data \
        --data-dir "$data" --http-addr "$ADDR" >"$data.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        curl -sf "http://$ADDR/readyz" >/dev/null && return 0
        sleep 0.2
    done
    echo "the node did not start: $(tail -5 "$data.log")" >&2
    return 1
}

stop_node() {
    kill "$server"
    wait "$server" || true
    rm -rf "$data"
}

median() { sort -n | sed -n 2p; }

relay() {
    for n in 1 2 3; do
        fresh_vhost sf-bench-relay
        "$bin/relay-throughput" --amqp amqp://guest:guest@127.0.0.1:5672/sf-bench-relay \
            --events 200000 | tee "$OUT/relay-$n.txt"
    done
    rabbitmqctl -q delete_vhost sf-bench-relay >/dev/null
    echo "relay: median $(grep -ho '= [0-9]* events/s' "$OUT"/relay-*.txt | tr -dc '0-9\n' | median) events/s"
}

# Off and on alternate, five runs each, so that a drift of the machine meets both alike.
checkout() {
    for n in 1 2 3 4 5; do
        for mode in off on; do
            fresh_vhost sf-bench-checkout
            if [ "$mode" = on ]; then
                start_node STOREFRONT_EVENTS__AMQP_URL=amqp://guest:guest@127.0.0.1:5672/sf-bench-checkout
            else
                start_node
            fi
            "$bin/storefront-load" --url "http://$ADDR" --server-pid "$server" --connections 64 \
                --json "$OUT/checkout-$mode-$n.json" \
                checkout-mix --checkouts 20000 --skus 100 --shoppers 1000
            stop_node
        done
    done
    for mode in off on; do
        echo "checkout, relay $mode: median $(for n in 1 2 3 4 5; do
            grep -m1 '"iterations_per_s"' "$OUT/checkout-$mode-$n.json" | tr -dc '0-9.\n'
        done | sort -n | sed -n 3p) checkouts/s"
    done
    rabbitmqctl -q delete_vhost sf-bench-checkout >/dev/null
}

mail() {
    for n in 1 2 3; do
        fresh_vhost sf-bench-mail
        local url=amqp://guest:guest@127.0.0.1:5672/sf-bench-mail log="$OUT/mail-$n.log"
        /usr/bin/python3 benches/load/smtp_sink.py 127.0.0.1 "$SMTP_PORT" "$log" &
        local sink=$!
        local notify_dir
        notify_dir=$(mktemp -d "$OUT/notify.XXXXXX")
        "$bin/storefront" notify --amqp "$url" --smtp-url "smtp://127.0.0.1:$SMTP_PORT" \
            --mail-from shop@example.com --data-dir "$notify_dir" \
            --metrics-addr 127.0.0.1:18286 >"$notify_dir.log" 2>&1 &
        local notifier=$!
        # The notification queue exists before the node's first event (the admin's account).
        for _ in $(seq 100); do
            rabbitmqctl -q list_queues -p sf-bench-mail name | grep -qx storefront.notifications && break
            sleep 0.2
        done
        start_node STOREFRONT_EVENTS__AMQP_URL="$url"
        # The sale opens once the shoppers' welcome mails (and the admin's) are out, so the
        # confirmations queue behind nothing but each other.
        local hold="$OUT/hold-$n"
        touch "$hold"
        "$bin/storefront-load" --url "http://$ADDR" --server-pid "$server" --connections 64 \
            --json "$OUT/mail-sale-$n.json" flash-sale --shoppers 10000 --stock 10000 \
            --workers 64 --hold-while "$hold" &
        local sale=$!
        for _ in $(seq 1200); do
            [ "$(grep -c 'Welcome' "$log" || true)" -ge 10001 ] && break
            sleep 0.2
        done
        rm -f "$hold"
        wait "$sale"
        # Every confirmation mailed (10,000), or two minutes.
        for _ in $(seq 600); do
            [ "$(grep -c 'is confirmed' "$log" || true)" -ge 10001 ] && break
            sleep 0.2
        done
        stop_node
        kill "$notifier" "$sink"
        wait "$notifier" "$sink" 2>/dev/null || true
        rm -rf "$notify_dir"
        /usr/bin/python3 benches/load/mail_latency.py "$log" | tee "$OUT/mail-$n.txt"
    done
    rabbitmqctl -q delete_vhost sf-bench-mail >/dev/null
    echo "mail: median p50 $(grep -ho 'p50 [0-9]* ms' "$OUT"/mail-*.txt | awk '{print $2}' | median) ms," \
        "median p99 $(grep -ho 'p99 [0-9]* ms' "$OUT"/mail-*.txt | awk '{print $2}' | median) ms"
}

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(relay checkout mail)
for part in "${parts[@]}"; do
    case $part in
    relay | checkout | mail) "$part" ;;
    *) echo "unknown part $part" >&2; exit 2 ;;
    esac
done
echo "reports in $OUT"
