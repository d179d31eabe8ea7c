complete -c im-client -l runtime -d 'The runtime that carries bytes between the sockets, the terminal and the client core: `smol` (async tasks) or `threads` (blocking std threads). Both behave the same' -r
complete -c im-client -l ca -d 'With --tls: trust the CA certificates in this PEM file instead of the system\'s (for a private CA or a self-signed server certificate)' -r -F
complete -c im-client -l server-name -d 'With --tls: the name the server\'s certificate must carry, when it is not the server\'s name or address as given (say, an IP address, and a certificate that names the host)' -r
complete -c im-client -l generate -d 'Write the man page and the shell completions into DIR, and exit (for packaging)' -r -F
complete -c im-client -l tls -d 'Speak TLS on both connections (the server runs with --tls-cert): the server\'s certificate is verified against the system\'s root certificates (or --ca), on La and again on Lb, so only the real server can send messages to this client'
complete -c im-client -s h -l help -d 'Print help (see more with \'--help\')'
complete -c im-client -s V -l version -d 'Print version'
