complete -c im-server -l make-cert -d 'Make a self-signed server certificate for these names (DNS names or IP addresses, comma separated; the first is the subject\'s), write DIR/cert.pem and DIR/key.pem (--out), print the commands that use them, and exit. Clients trust it with --ca DIR/cert.pem' -r
complete -c im-server -l out -d 'With --make-cert: the directory to write cert.pem and key.pem to (made if missing)' -r -F
complete -c im-server -l generate -d 'Write the man page and the shell completions into DIR, and exit (for packaging)' -r -F
complete -c im-server -l config -d 'Read options from this TOML file: `key = value` a line, the keys the long options\' names (`ack-timeout = "10s"`, `reuse-port = true`), and `port` and `users-file`. Options given on the command line win; relative paths in the file are relative to its directory. SIGHUP reads it again. The sample packaging/im-server.toml lists them all' -r -F
complete -c im-server -l bind -d 'The IP address to listen on' -r
complete -c im-server -l ack-timeout -d 'How long a recipient has to answer `302` before the delivery fails (e.g. `500ms`, `10s`)' -r
complete -c im-server -l connect-timeout -d 'How long connecting to a client\'s Lb port may take before `202`' -r
complete -c im-server -l login-timeout -d 'How long a connection may stay without logging in before it is closed' -r
complete -c im-server -l max-login-failures -d 'Failed logins in a row after which the connection is closed' -r
complete -c im-server -l max-line -d 'The longest line accepted, `\\n` included; a longer one is answered `401` and skipped' -r
complete -c im-server -l max-queue -d 'Messages that may wait for one recipient; one that finds the queue full fails (`304`)' -r
complete -c im-server -l throttle-address -d 'Failed password checks one address (an IPv6 /64) may make, whatever the accounts: BURST/PERIOD (BURST at once, then one more every PERIOD), or `off`. A login past it is answered 102 without a check' -r
complete -c im-server -l throttle-address-account -d 'Failed password checks one address may make for one account; a right password fills it again' -r
complete -c im-server -l throttle-account -d 'Failed password checks for one account from all addresses together (an address that logged in as that account within --login-trust is exempt until it fails for it)' -r
complete -c im-server -l login-trust -d 'How long a successful login exempts its address from the account\'s budget' -r
complete -c im-server -l throttle-reconnects -d 'Connections from one address that may end without a successful login; past it, new connections from that address are closed at once' -r
complete -c im-server -l password-checks -d 'Password checks (argon2) run at once; each takes the hash\'s memory (19 MiB for --hash-password\'s). Default: the number of CPUs' -r
complete -c im-server -l password-check-queue -d 'Password checks that may wait for a turn (taken in turn by address); a login past it is answered 102 without a check' -r
complete -c im-server -l runtime -d 'The runtime that carries bytes between sockets and the server core: `smol` (async tasks on one thread), `threads` (blocking sockets, a thread per socket, each thread with a 64 KiB stack), `tokio` (its current-thread runtime) or `uring` (Linux, in a build with the `uring` feature: the async loop over io_uring). All behave the same on the wire; `--cluster` needs one of the async ones. Default: smol, and tokio for a `--cluster` node (its Redis connections then run on its own thread, which costs less CPU)' -r
complete -c im-server -l max-connections -d 'Clients connected at once; one more is closed as soon as it connects. Default: 20000 with smol, 2000 with threads (each client costs three threads there, and that runtime lowers any cap to what the system\'s vm.max_map_count allows)' -r
complete -c im-server -l max-per-ip -d 'Clients connected at once from one IP address; one more is closed as soon as it connects' -r
complete -c im-server -l cluster -d 'Run as one node of a cluster whose nodes share this Redis (`redis://HOST:PORT` or `unix:///path/to/redis.sock`): one chat across every node. Without it the server is the whole chat and needs nothing else. Needs an async runtime; on `--runtime tokio` a node drives its Redis connections on its own thread, which costs the least CPU' -r
complete -c im-server -l cluster-lease -d 'How long a cluster node stays alive without renewing its lease in Redis: a node that dies keeps its users at most this long; it renews three times per lease' -r
complete -c im-server -l tls-cert -d 'Speak TLS on both connections with this PEM certificate chain (the server\'s certificate first); needs --tls-key. Clients need --tls. Without it, the protocol\'s plain TCP' -r -F
complete -c im-server -l tls-key -d 'The PEM private key of --tls-cert' -r -F
complete -c im-server -l keepalive -d 'TCP keepalive on every client socket: a client whose machine vanishes without closing its connections (power cut, cable pulled) is probed after this much silence and goes offline within 1.5 times it, its pending deliveries failing with 304. `off` disables it' -r
complete -c im-server -l metrics -d 'Serve Prometheus metrics at `http://ADDR/metrics` (e.g. `127.0.0.1:9100`; port 0 picks a free one, named in the log). Anyone who reaches ADDR can read them: bind it to loopback or a private network. Without it no port is opened and nothing is counted' -r
complete -c im-server -l log -d 'The log level on standard error (error, warn, info, debug, trace, off); `RUST_LOG`, if set, overrides it' -r
complete -c im-server -l hash-password -d 'Read a password from standard input, print its argon2id hash (for the users file in place of the password), and exit'
complete -c im-server -l check-config -d 'Check the options (the --config file\'s too) and the users file, print the effective settings as a --config file, and exit'
complete -c im-server -l reuse-port -d 'Set SO_REUSEPORT on the listening socket, so that several `im-server` processes (cluster nodes) on this machine listen on one port and the kernel spreads clients among them'
complete -c im-server -s h -l help -d 'Print help'
complete -c im-server -s V -l version -d 'Print version'
