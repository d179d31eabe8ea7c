#!/usr/bin/env bash
# Password guessing against a fresh release im-server on loopback, as BENCHMARKS.md's
# "logins under attack": `im-bench login-flood` with 200 guessers from 127.0.0.2-127.0.0.9 at
# alice (every 50th guess her right password) while alice and bob log in once a second from
# 127.0.0.1, in two setups: every password plain, then alice's stored as an argon2 hash.
#   scripts/bench-login-flood.sh                  # both setups, 20 s each
#   scripts/bench-login-flood.sh plain --json     # one setup, with these extra im-bench options
#   SERVER=/tmp/old/im-server scripts/bench-login-flood.sh   # another build's server
#   KILL_ABOVE=6144 DURATION=20s scripts/bench-login-flood.sh   # the defaults
# A server whose RSS passes KILL_ABOVE MiB is killed by im-bench (--kill-server-above) and the
# run ends there: the machine's memory is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release --quiet --bin im-server --bin im-bench
server=${SERVER:-$bin/im-server}
duration=${DURATION:-20s}
kill_above=${KILL_ABOVE:-6144}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'alice alice-secret\nbob bob-secret\n' > "$work/plain"
# The same accounts, alice's password as im-server --hash-password stores it (argon2id).
hash=$(printf 'alice-secret\n' | "$server" --hash-password)
printf 'alice %s\nbob bob-secret\n' "$hash" > "$work/hashed"

run() {
    local setup=$1
    shift
    echo "== $setup: alice's password stored $setup" >&2
    # Default limits: --max-per-ip (1,000) is above the 25 guessers per address.
    # A fresh file per run: the parent may look before the child has truncated an old one.
    local portfile="$work/port-$setup"
    "$server" 0 "$work/$setup" --bind 127.0.0.1 --log warn > "$portfile" 2> /dev/null &
    local pid=$!
    local port
    port=$(port_of "$portfile")
    local status=0
    "$bin/im-bench" login-flood --port "$port" --target alice --password alice-secret \
        --attackers 200 --sources 8 --right-every 50 \
        --real alice:alice-secret --real bob:bob-secret \
        --duration "$duration" --server-pid "$pid" --kill-server-above "$kill_above" "$@" \
        || status=$?
    kill "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    return "$status"
}

case "${1:-all}" in
    plain | hashed) setup=$1; shift; run "$setup" "$@" ;;
    all)
        shift || true
        status=0
        run plain "$@" || status=$?
        run hashed "$@" || status=$?
        exit "$status"
        ;;
    *) echo "usage: scripts/bench-login-flood.sh [plain|hashed|all] [im-bench options]" >&2; exit 2 ;;
esac
