# Shared by the bench scripts: `source "$(dirname "$0")/lib.sh"`.

# Prints the port an im-server (or a relay) started with port 0 is listening on, read from its
# standard output in FILE (its `listening on ADDRESS:PORT` line); waits up to 5 s for it, then
# fails with a one-line message.
port_of() {
    local file=$1 port=""
    for _ in $(seq 100); do
        port=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$file" 2> /dev/null)
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        sleep 0.05
    done
    echo "$0: no 'listening on' line in $file after 5 s" >&2
    return 1
}
