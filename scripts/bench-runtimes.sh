#!/usr/bin/env bash
# The runtimes side by side with the bare mio relay (crates/im-bench/examples/mio_relay.rs), interleaved in one
# run so that machine noise hits them alike, as BENCHMARKS.md's "Runtimes against a bare relay".
# The kind `urelay` is the bare io_uring relay (crates/im-bench/examples/uring_relay.rs), same protocol:
#   scripts/bench-runtimes.sh [ROUNDS] [SECONDS]     # default 3 rounds of 6 s per scenario
#   KINDS="relay uring" scripts/bench-runtimes.sh 1 4   # only some of them (the relay always first)
#   BASE=/tmp/old/im-server KINDS="relay smol base-smol" scripts/bench-runtimes.sh   # before/after
#   KINDS="relay tokio tokio+tls" scripts/bench-runtimes.sh   # a kind+tls: TLS on La and Lb
#   PIN=1 scripts/bench-runtimes.sh   # the server on CPU 0, im-bench on CPU 1 (taskset): less noise
# Each round runs `to` (100 pairs) then `toall` (1,000 recipients) against a fresh server of each
# kind in turn (relay, smol, threads, tokio, uring), with --server-pid. Counting system calls with perf
# makes each of them dearer (the tracepoints), so the calls come from one more round of their
# own, with --perf-syscalls, where perf may trace the server; the other figures from the rounds
# without. It prints one line per run and then the medians, and the median of the per-round
# ratios to the relay.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
server_cpu=() bench_cpu=()
if [ "${PIN:-0}" = 1 ]; then
    server_cpu=(taskset -c 0) bench_cpu=(taskset -c 1)
fi
rounds=${1:-3}
kinds=${KINDS:-relay smol threads tokio uring}
export KINDS="$kinds"
seconds=${2:-6}
# The uring runtime is opt-in: this build has it, for the kind `uring`.
cargo build --release --quiet --features simple-im/uring --bin im-server --bin im-bench --example mio_relay \
    --example uring_relay
bin=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/im-bench" gen-users 1200 > "$work/users"
# For the +tls kinds: a private CA and a certificate it signed for 127.0.0.1.
case " $kinds " in
    *+tls*)
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
            -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
            -addext keyUsage=critical,keyCertSign -keyout "$work/ca-key.pem" \
            -out "$work/ca.pem" 2> /dev/null
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
            -keyout "$work/key.pem" -out "$work/req.pem" 2> /dev/null
        printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$work/ext"
        openssl x509 -req -in "$work/req.pem" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
            -CAcreateserial -days 1 -extfile "$work/ext" -out "$work/cert.pem" 2> /dev/null
        ;;
esac
counting=0
if perf stat -e raw_syscalls:sys_enter true > /dev/null 2>&1; then
    counting=1
fi

start() {
    local kind=${1%+tls} tls=()
    [ "$kind" != "$1" ] && tls=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
    case $kind in
        relay) "${server_cpu[@]}" "$bin/examples/mio_relay" 0 > "$work/port" & ;;
        urelay) "${server_cpu[@]}" "$bin/examples/uring_relay" 0 > "$work/port" & ;;
        base-*) "${server_cpu[@]}" "$BASE" 0 "$work/users" --bind 127.0.0.1 --log warn --max-per-ip 20000 \
               --runtime "${kind#base-}" "${tls[@]}" > "$work/port" & ;;
        *) "${server_cpu[@]}" "$bin/im-server" 0 "$work/users" --bind 127.0.0.1 --log warn --max-per-ip 20000 \
               --runtime "$kind" "${tls[@]}" > "$work/port" & ;;
    esac
    server=$!
    port=$(port_of "$work/port")
}

for round in $(seq "$((rounds + counting))"); do
    perf=()
    [ "$round" -gt "$rounds" ] && perf=(--perf-syscalls)
    for scenario in to toall; do
        for kind in $kinds; do
            start "$kind"
            case $scenario in
                to) load=(--pairs 100) ;;
                toall) load=(--recipients 1000) ;;
            esac
            tls=()
            [ "${kind%+tls}" != "$kind" ] && tls=(--tls --ca "$work/ca.pem")
            "${bench_cpu[@]}" "$bin/im-bench" "$scenario" "${load[@]}" --port "$port" --users "$work/users" \
                --duration "${seconds}s" --server-pid "$server" "${perf[@]}" "${tls[@]}" --json \
                > "$work/$round-$scenario-$kind.json" 2> /dev/null || true
            kill "$server"
            wait "$server" 2> /dev/null || true
        done
    done
done

python3 - "$work" "$rounds" << 'EOF'
import json, os, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
kinds = os.environ["KINDS"].split()
def figures(report, scenario):
    load = report.get("load") or {}
    calls = load.get("syscalls") or {}
    return {
        "cpu_us": load.get("cpu", {}).get("server_us_per_delivery"),
        "calls": calls.get("all_per_delivery"),
        "named": calls.get("by_name_per_delivery"),
        "rate": load.get("deliveries_per_second"),
        "p50_ms": (load.get("latency_us", {}).get("p50") or 0) / 1000,
        "failures": report.get("failures", {}).get("total"),
        "first_error": report.get("first_error"),
    }
for scenario in ["to", "toall"]:
    runs = {kind: [] for kind in kinds}
    for round in range(1, rounds + 1):
        for kind in kinds:
            try:
                with open(f"{work}/{round}-{scenario}-{kind}.json") as file:
                    runs[kind].append(figures(json.load(file), scenario))
            except (OSError, ValueError):
                runs[kind].append(None)
            print(scenario, round, kind, runs[kind][-1])
    counted = {}
    try:
        for kind in kinds:
            with open(f"{work}/{rounds + 1}-{scenario}-{kind}.json") as file:
                counted[kind] = figures(json.load(file), scenario)
            print(scenario, "count", kind, counted[kind])
    except (OSError, ValueError):
        pass
    print(f"\n{scenario}: median (median of per-round ratios to the relay)")
    for kind in kinds:
        line = [f"  {kind:8}"]
        calls = counted.get(kind, {}).get("calls")
        base = counted.get("relay", {}).get("calls")
        if calls is not None and base:
            line.append(f"calls {calls:.2f} ({calls / base:.2f}x)")
        for key in ["cpu_us", "rate", "p50_ms"]:
            values = [run[key] for run in runs[kind] if run and run[key] is not None]
            ratios = [
                run[key] / base[key]
                for run, base in zip(runs[kind], runs["relay"])
                if run and base and run[key] and base[key]
            ]
            median = statistics.median(values) if values else float("nan")
            ratio = statistics.median(ratios) if ratios else float("nan")
            line.append(f"{key} {median:.2f} ({ratio:.2f}x)")
        print("  ".join(line))
EOF
