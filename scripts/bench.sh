#!/usr/bin/env bash
# Runs im-bench scenarios against a fresh release im-server on 127.0.0.1, as BENCHMARKS.md does.
#   scripts/bench.sh            # all three: to (100 pairs), toall (1,000 recipients), sessions (9,950)
#   scripts/bench.sh toall      # one of them
#   scripts/bench.sh to --pairs 10 --count 1000 --json   # one, with these im-bench options instead
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
cargo build --release --quiet --bin im-server --bin im-bench
bin=target/release
users=$(mktemp)
trap 'rm -f "$users"' EXIT
"$bin/im-bench" gen-users 12000 > "$users"

run() {
    local scenario=$1
    shift
    # A fresh server per scenario; all simulated users come from 127.0.0.1, hence --max-per-ip.
    "$bin/im-server" 0 "$users" --bind 127.0.0.1 --log warn --max-per-ip 20000 > "$users.port" &
    local server=$!
    local port
    port=$(port_of "$users.port")
    local status=0
    "$bin/im-bench" "$scenario" --port "$port" --users "$users" --server-pid "$server" "$@" || status=$?
    kill "$server"
    wait "$server" 2> /dev/null || true
    rm -f "$users.port"
    return "$status"
}

case "${1:-all}" in
    to) shift; [ $# -gt 0 ] || set -- --pairs 100 --duration 10s; run to "$@" ;;
    toall) shift; [ $# -gt 0 ] || set -- --recipients 1000 --duration 10s; run toall "$@" ;;
    sessions) shift; [ $# -gt 0 ] || set -- --count 9950 --hold 2s; run sessions "$@" ;;
    all)
        run to --pairs 100 --duration 10s
        run toall --recipients 1000 --duration 10s
        run sessions --count 9950 --hold 2s
        ;;
    *) echo "usage: scripts/bench.sh [to|toall|sessions|all] [im-bench options]" >&2; exit 2 ;;
esac
