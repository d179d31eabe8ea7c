#!/usr/bin/env bash
# The Debian package under a real systemd: a minimal Debian (debootstrap) booted with
# systemd-nspawn, systemd as its PID 1, on a network of its own (loopback only); the package
# installed with dpkg, then `systemctl start`, a /login over loopback, `systemctl reload`
# after editing the config and users files (a lowered --max-login-failures and a new user,
# seen over the wire, the same process still serving), and `systemctl stop` (a clean exit).
#
#   sudo scripts/systemd-check.sh target/debian/simple-im_*.deb
#
# Needs root, debootstrap and systemd-nspawn (apt-get install debootstrap systemd-container),
# and a Debian mirror for debootstrap (DEBIAN_MIRROR, default deb.debian.org; DEBIAN_SUITE,
# default bookworm). Everything it makes is under one temporary directory, removed at the end
# whatever happens. tests/packaging.rs runs it (ignored unless asked: it needs root).
set -euo pipefail

deb=$(realpath "${1:?usage: $0 PACKAGE.deb}")
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
started=$SECONDS
step() { echo "systemd-check: [$((SECONDS - started))s] $*"; }
fail() { echo "systemd-check: FAILED: $*" >&2; exit 1; }

# Not /tmp: it may be a small tmpfs, and a Debian tree is ~250 MB.
work=$(mktemp -d /var/tmp/im-systemd-check.XXXXXX)
root=$work/root
nspawn=
cleanup() {
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2> /dev/null; then
        # nspawn's SIGTERM asks systemd in the container to power off.
        kill -TERM "$nspawn" 2> /dev/null || true
        for _ in $(seq 100); do kill -0 "$nspawn" 2> /dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn" 2> /dev/null || true
        wait "$nspawn" 2> /dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

step "debootstrap $suite (minbase, systemd) into $root"
# procps is the package's dependency (the unit reloads with /bin/kill): given here, since the
# container has no network for apt to fetch it.
if ! debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,adduser,procps \
    "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1; then
    tail -20 "$work/debootstrap.log" >&2
    fail "debootstrap"
fi
cp "$deb" "$root/root/simple-im.deb"

step "boot it: systemd-nspawn --boot --private-network"
# --register=no and --keep-unit: no systemd on this side to register with or make a scope.
systemd-nspawn --directory="$root" --boot --register=no --keep-unit --private-network \
    --console=pipe --machine="im-check-$$" > "$work/console.log" 2>&1 &
nspawn=$!
# The container's PID 1 is nspawn's child once it has become systemd (it is nspawn's copy
# before it runs it).
leader=
for _ in $(seq 200); do
    leader=$(pgrep -P "$nspawn" || true)
    [ -n "$leader" ] && [ "$(cat /proc/"$leader"/comm 2> /dev/null)" = systemd ] && break
    leader=
    kill -0 "$nspawn" 2> /dev/null || { cat "$work/console.log" >&2; fail "systemd-nspawn exited"; }
    sleep 0.1
done
[ -n "$leader" ] || { cat "$work/console.log" >&2; fail "no systemd under systemd-nspawn"; }
# Every namespace of the container's PID 1, its root and its working directory.
inside() { nsenter --target "$leader" --all --root --wd -- "$@"; }
# Until systemd has finished booting (its bus is not there at first): 60 s at most.
state=
for _ in $(seq 120); do
    state=$(inside systemctl is-system-running 2> /dev/null || true)
    case $state in running | degraded) break ;; esac
    sleep 0.5
done
[ "$(inside cat /proc/1/comm)" = systemd ] || fail "the container's PID 1 is not systemd"
step "systemd is PID 1, system $state"
case $state in running | degraded) ;; *) fail "system $state" ;; esac

step "dpkg -i the package"
inside env DEBIAN_FRONTEND=noninteractive dpkg -i /root/simple-im.deb > "$work/dpkg.log" 2>&1 ||
    { cat "$work/dpkg.log" >&2; fail "dpkg -i"; }
inside id simple-im > /dev/null || fail "the package made no simple-im user"
printf 'jacky 12345\n' > "$root/etc/simple-im/users.txt"
inside chown root:simple-im /etc/simple-im/users.txt
inside chmod 640 /etc/simple-im/users.txt

journal() { inside journalctl --no-pager -o cat -u im-server; }
# Waits up to 10 s for the service's journal to say $1.
expect_log() {
    for _ in $(seq 100); do journal | grep -qF -- "$1" && return 0; sleep 0.1; done
    journal >&2
    fail "no \"$1\" in the journal"
}
# One La conversation over the container's loopback: the lines of $1 sent one at a time, each
# answer printed; stops at the server's end of file (printed as EOF).
talk() {
    inside bash -c '
        exec 3<> /dev/tcp/127.0.0.1/4000 || exit 1
        while IFS= read -r line; do
            printf "%s\n" "$line" >&3
            if IFS= read -r -t 5 answer <&3; then echo "$answer"; else echo EOF; exit 0; fi
        done <<< "$1"
        # Anything more, or the end of the connection.
        if IFS= read -r -t 1 answer <&3; then echo "$answer"; elif [ $? -gt 128 ]; then echo open; else echo EOF; fi
    ' talk "$1"
}

step "systemctl start im-server"
inside systemctl start im-server || { journal >&2; fail "systemctl start"; }
expect_log "listening on 0.0.0.0:4000"
pid=$(inside systemctl show -P MainPID im-server)
user=$(inside ps -o user= -p "$pid")
[ "$user" = simple-im ] || fail "the server runs as $user"
answers=$(talk "/login jacky 12345")
[ "$answers" = $'101 Authentication successful\nopen' ] || fail "/login answered: $answers"
step "/login over loopback: 101 (server PID $pid, user $user)"

step "edit the files, systemctl reload im-server"
printf 'jacky 12345\ndave dave123\n' > "$root/etc/simple-im/users.txt"
printf '\nmax-login-failures = 1\n' >> "$root/etc/simple-im/im-server.toml"
inside systemctl reload im-server || { journal >&2; fail "systemctl reload"; }
expect_log "SIGHUP: max-login-failures = 1 (was 5)"
expect_log "users reloaded: 2 accounts"
[ "$(inside systemctl show -P MainPID im-server)" = "$pid" ] || fail "the server was restarted"
answers=$(talk "/login dave dave123")
[ "$answers" = $'101 Authentication successful\nopen' ] || fail "dave after the reload: $answers"
answers=$(talk "/login jacky wrong")
[ "$answers" = $'102 Authentication failed\nEOF' ] || fail "one failure after the reload: $answers"
step "reloaded in place: dave logs in, one failed login ends a connection"

step "systemctl stop im-server"
inside systemctl stop im-server
expect_log "stopped: every connection is closed"
result=$(inside systemctl show -P Result im-server)
status=$(inside systemctl show -P ExecMainStatus im-server)
[ "$result" = success ] && [ "$status" = 0 ] || fail "stop: Result=$result status=$status"
step "stopped: Result=$result, exit status $status"
journal | grep -E 'SIGHUP|reloaded|stopp' | sed 's/^/    journal: /'
step "all good"
