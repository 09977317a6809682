# shellcheck shell=bash disable=SC2034,SC2154 # `bin` is the caller's; `token` is for it
# Sourced by the scripts beside it: a fresh node (release build, fresh data dir, rate limits off)
# on 127.0.0.1:18180 with one product HOT-1 of 50,000,000 units and one customer.
#
# `start_node [WRAPPER...]` starts "$bin serve" (under WRAPPER, e.g. valgrind, if given), waits
# for it to be ready and sets up the shop; it sets `server` (the pid), `data` (the data dir) and
# `token` (the customer's access token). `stop_node` stops it and removes its data.
ADDR=127.0.0.1:18180 URL=http://127.0.0.1:18180
export STOREFRONT_ADMIN_EMAIL=bench-admin@example.com STOREFRONT_ADMIN_PASSWORD=bench-admin-password

# The access token of a login.
login() {
    curl -sf "$URL/v1/auth/login" -H 'content-type: application/json' \
        -d "{\"email\":\"$1\",\"password\":\"$2\"}" | sed -E 's/.*"access_token":"([^"]+)".*/\1/'
}

start_node() {
    data=$(mktemp -d /tmp/storefront-wrk.XXXXXX)
    STOREFRONT_RATE_LIMIT__ENABLED=false "$@" "$bin" serve --data-dir "$data" --http-addr "$ADDR" \
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
    local admin
    admin=$(login "$STOREFRONT_ADMIN_EMAIL" "$STOREFRONT_ADMIN_PASSWORD")
    curl -sf "$URL/v1/admin/products" -H "authorization: Bearer $admin" \
        -H 'content-type: application/json' -o /dev/null -d '{"sku":"HOT-1","name":"Hot","description":"hot",
        "category":"drops","price":{"amount":"10.00","currency":"USD"},"initial_stock":50000000}'
    curl -sf "$URL/v1/auth/register" -H 'content-type: application/json' -o /dev/null \
        -d '{"email":"shopper@example.com","password":"shopper-password"}'
    token=$(login shopper@example.com shopper-password)
}

stop_node() {
    kill "$server"
    wait "$server" || true
    rm -rf "$data" "$data.log"
}
