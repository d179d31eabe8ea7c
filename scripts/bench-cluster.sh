#!/usr/bin/env bash
# Cluster mode's costs side by side, interleaved in one run so that machine noise hits them
# alike (BENCHMARKS.md, "Cluster mode"):
#   scripts/bench-cluster.sh [ROUNDS] [SECONDS]     # default 3 rounds of 6 s per scenario
# Setups: `single` (one node, no Redis), `redis` (one node on Redis), `cross` (two nodes on
# their own ports: im-bench spreads users over them, every `/to` receiver on the other node),
# `shared` (two nodes on one port with --reuse-port: the kernel spreads users). Each round runs
# `to` (100 pairs) then `toall` (200 recipients) on fresh servers and a fresh redis-server (Unix
# socket, no persistence); CPU per delivery counts every node and redis-server (--server-pid).
# A setup with `+tokio` (`cross+tokio`) runs its nodes on `--runtime tokio` (a node's default),
# where a node's Redis connections run on its own thread; without it on `--runtime smol`, where
# they run on smol's global executor's threads. A setup ending in `@NAME` (`cross+tokio@old`) runs the im-server binary
# that the variable BIN_NAME names, to set two builds side by side in one run:
#   BIN_old=/tmp/old/im-server SETUPS="single cross+tokio cross+tokio@old" scripts/bench-cluster.sh
# It prints one line per run, then per setup the median CPU per delivery and its median ratio
# to the first setup in the same round.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
rounds=${1:-3}
seconds=${2:-6}
setups=${SETUPS:-single redis cross shared}
export SETUPS="$setups"
target=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin im-server --bin im-bench
bin=$target/release
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
"$bin/im-bench" gen-users 1200 > "$work/users"

# Starts one im-server (the binary in `$server_bin`) with these options; sets `server` and
# `port`.
node() {
    "$server_bin" "$1" "$work/users" --bind 127.0.0.1 --log warn --max-per-ip 20000 \
        "${@:2}" > "$work/port.$$" 2> /dev/null &
    server=$!
    pids+=("$server")
    port=$(port_of "$work/port.$$")
}

for round in $(seq "$rounds"); do
    for scenario in to toall; do
        case $scenario in
            to) load=(--pairs 100) ;;
            toall) load=(--recipients 200) ;;
        esac
        for setup in $setups; do
            pids=()
            watch=() ports=()
            cluster=()
            server_bin=$bin/im-server
            base=${setup%@*}
            if [ "$base" != "$setup" ]; then
                binvar=BIN_${setup##*@}
                server_bin=${!binvar:?"setup $setup needs $binvar, an im-server binary"}
            fi
            tokio=${base%+tokio}
            cluster=(--runtime smol)
            if [ "$tokio" != "$base" ]; then
                cluster=(--runtime tokio)
            fi
            base=$tokio
            if [ "$base" != single ]; then
                rm -f "$work/redis.sock"
                redis-server --port 0 --unixsocket "$work/redis.sock" --save '' \
                    --appendonly no > /dev/null &
                redis=$!
                pids+=("$redis")
                watch+=(--server-pid "$redis")
                for _ in $(seq 100); do [ -S "$work/redis.sock" ] && break; sleep 0.05; done
                cluster+=(--cluster "unix://$work/redis.sock")
            fi
            case $base in
                single | redis)
                    node 0 "${cluster[@]}"; watch+=(--server-pid "$server"); ports+=(--port "$port") ;;
                cross)
                    node 0 "${cluster[@]}"; watch+=(--server-pid "$server"); ports+=(--port "$port")
                    node 0 "${cluster[@]}"; watch+=(--server-pid "$server"); ports+=(--port "$port") ;;
                shared)
                    node 0 "${cluster[@]}" --reuse-port; watch+=(--server-pid "$server")
                    ports+=(--port "$port")
                    node "$port" "${cluster[@]}" --reuse-port; watch+=(--server-pid "$server") ;;
            esac
            "$bin/im-bench" "$scenario" "${load[@]}" "${ports[@]}" --users "$work/users" \
                --duration "${seconds}s" "${watch[@]}" --json \
                > "$work/$round-$scenario-$setup.json" 2> /dev/null || true
            for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
            for pid in "${pids[@]}"; do wait "$pid" 2> /dev/null || true; done
            pids=()
        done
    done
done

python3 - "$work" "$rounds" << 'PY'
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
setups = os.environ["SETUPS"].split()
def figures(path):
    try:
        with open(path) as file:
            report = json.load(file)
    except (OSError, ValueError):
        return None
    load = report.get("load") or {}
    return {
        "cpu_us": load.get("cpu", {}).get("server_us_per_delivery"),
        "rate": load.get("deliveries_per_second"),
        "p50_ms": (load.get("latency_us", {}).get("p50") or 0) / 1000,
        "failures": report.get("failures", {}).get("total"),
    }
for scenario in ["to", "toall"]:
    runs = {setup: [] for setup in setups}
    for n in range(1, rounds + 1):
        for setup in setups:
            runs[setup].append(figures(f"{work}/{n}-{scenario}-{setup}.json"))
            print(scenario, n, setup, runs[setup][-1])
    for setup in setups:
        cpu = [r["cpu_us"] for r in runs[setup] if r and r["cpu_us"]]
        rate = [r["rate"] for r in runs[setup] if r and r["rate"]]
        ratios = [r["cpu_us"] / s["cpu_us"] for r, s in zip(runs[setup], runs[setups[0]])
                  if r and s and r["cpu_us"] and s["cpu_us"]]
        median = lambda xs: round(statistics.median(xs), 2) if xs else None
        print(f"{scenario} {setup}: {median(rate)}/s, {median(cpu)} µs CPU per delivery, "
              f"{median(ratios)}x {setups[0]}")
PY
