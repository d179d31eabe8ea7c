#!/usr/bin/env python3
"""A small threaded server for the instant-messaging protocol of docs/protocol.md.

    python3 server.py <port> <users-file> [--bind IP] [--ack-timeout 10s] [--bug NAME]

It is the reference example for `im-check server`, and with `--bug NAME` it misbehaves on
purpose so that im-check's own tests can see the right checks fail:

    auth-case       answers "102 Authentication Failed" (capital F)
    broadcast-word  forwards "/broadcast <sender> <content>" instead of "/broadcastfrom ..."
    toall-silent    delivers a /toall but never answers the sender
    duplicate-deadlock
                    answers a login as a user already online with 102, then keeps the
                    server's lock forever: every later login, /list and logout hangs (what a
                    real submission does)
    duplicate-close-deadlock
                    answers a login as a user already online with 102 as it should, but when
                    that refused connection closes, its cleanup takes the server's lock and
                    never gives it back: every later login hangs (another real submission)

One thread per La connection reads and answers that client's requests in order. Messages to a
user go through that user's queue, and one delivery thread per user sends them on its Lb one at
a time, waiting for each "302" (the assignment's lock). Standard library only.
"""

import argparse
import queue
import re
import socket
import sys
import threading

AUTH_OK = b"101 Authentication successful\n"
AUTH_FAILED = b"102 Authentication failed\n"
LB_OK = b"201 Build connection successful\n"
LB_FAILED = b"202 Build connection failed\n"
RECEIPT = b"302 Message receipt successful"
DELIVERED = b"303 Message delivery successful\n"
DELIVERY_FAILED = b"304 Message delivery failed\n"
BYE = b"310 Bye bye\n"
UNRECOGNIZED = b"401 Unrecognized message\n"

TOKEN = rb"[^ \r\n]+"
LOGIN = re.compile(rb"/login (" + TOKEN + rb") (" + TOKEN + rb")")
PORT = re.compile(rb"/port ([1-9][0-9]{0,4})")
TO = re.compile(rb"/to (" + TOKEN + rb") ([^\n]+)", re.DOTALL)
TOALL = re.compile(rb"/toall ([^\n]+)", re.DOTALL)

TOO_LONG = object()


def duration(text):
    """'500ms', '10s', '2m' -> seconds, longer than zero (§6)."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 500ms or 10s, longer than zero")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    return int(match.group(1)) * scale


def port_number(text):
    """A TCP port, 0 (the system picks one) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 0 to 65535")
    return int(text)


def count(text):
    """A whole number, at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument told in one line and exit code 2 (§6), not its usage."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: {message} (try --help)\n")
        sys.exit(2)


class Framer:
    """Splits a byte stream into lines of at most max_line bytes, '\\n' included (§1)."""

    def __init__(self, max_line):
        self.max_line = max_line
        self.held = b""
        self.discarding = False

    def feed(self, data):
        frames = []
        self.held += data
        while True:
            newline = self.held.find(b"\n")
            if self.discarding:
                if newline < 0:
                    self.held = b""
                    return frames
                self.held = self.held[newline + 1:]
                self.discarding = False
                continue
            if newline < 0:
                if len(self.held) >= self.max_line:
                    frames.append(TOO_LONG)
                    self.held = b""
                    self.discarding = True
                return frames
            line, self.held = self.held[:newline], self.held[newline + 1:]
            if newline + 1 > self.max_line:
                frames.append(TOO_LONG)
            else:
                frames.append(line[:-1] if line.endswith(b"\r") else line)


def read_lines(sock, max_line):
    """Yields the lines (or TOO_LONG) that arrive on sock until it ends or fails."""
    framer = Framer(max_line)
    while True:
        try:
            data = sock.recv(8192)
        except OSError:
            return
        if not data:
            return
        yield from framer.feed(data)


def close(sock):
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class Outcome:
    """Collects the delivery results of one request and tells when all are in."""

    def __init__(self, count):
        self.left = count
        self.ok = True
        self.done = threading.Condition()

    def settle(self, ok):
        with self.done:
            self.ok = self.ok and ok
            self.left -= 1
            self.done.notify_all()

    def wait(self):
        with self.done:
            self.done.wait_for(lambda: self.left <= 0)
            return self.ok


class Session:
    """One client: its La, its Lb once connected, and the queue of messages waiting for it."""

    def __init__(self, server, la, peer_ip):
        self.server = server
        self.la = la
        self.peer_ip = peer_ip
        self.name = None
        self.lb = None
        self.ended = False
        self.lock = threading.Lock()
        self.outbox = queue.Queue()  # (line, Outcome) waiting for this user's Lb
        self.lb_lines = queue.Queue()  # lines read from Lb; None once Lb is gone
        self.awaiting_ack = False
        self.refused_duplicate = False

    def send(self, data):
        try:
            self.la.sendall(data)
            return True
        except OSError:
            self.end()
            return False

    def enqueue(self, line, outcome, sender):
        with self.lock:
            if self.ended or self.lb is None or self.outbox.qsize() >= self.server.args.max_queue:
                return False
            self.outbox.put((line, outcome, sender))
            return True

    def end(self):
        """Ends the session: offline at once, connections closed, queued messages failed."""
        with self.lock:
            if self.ended:
                return
            self.ended = True
        if self.server.bug == "duplicate-close-deadlock" and self.refused_duplicate:
            self.server.lock.acquire()  # never released
        self.server.go_offline(self)
        self.outbox.put(None)
        self.lb_lines.put(None)
        close(self.lb)
        close(self.la)

    def deliver_forever(self):
        """Sends this user's messages on Lb one at a time, each waiting for its 302."""
        while True:
            item = self.outbox.get()
            if item is None or self.ended:
                if item is not None:
                    item[1].settle(False)
                while True:
                    try:
                        rest = self.outbox.get_nowait()
                    except queue.Empty:
                        return
                    if rest is not None:
                        rest[1].settle(False)
            line, outcome, sender = item
            if sender.ended:
                outcome.settle(False)  # withdrawn: its sender is gone
                continue
            self.awaiting_ack = True
            try:
                self.lb.sendall(line)
                reply = self.lb_lines.get(timeout=self.server.args.ack_timeout)
            except (OSError, queue.Empty):
                reply = None
            self.awaiting_ack = False
            if reply == RECEIPT:
                outcome.settle(True)
            else:
                # No 302 in time, another line, or Lb is gone: this delivery fails and so
                # does the session, so that a late 302 is never taken for the next message's.
                outcome.settle(False)
                self.end()

    def read_lb(self):
        for line in read_lines(self.lb, self.server.args.max_line):
            if not self.awaiting_ack:
                break  # a line nobody asked for
            self.lb_lines.put(line)
        self.end()

    def serve(self):
        try:
            self.la.settimeout(self.server.args.login_timeout)
            failures = 0
            for line in read_lines(self.la, self.server.args.max_line):
                if line is TOO_LONG:
                    self.send(UNRECOGNIZED)
                    continue
                if line == b"/exit":
                    self.server.go_offline(self)  # before 310: the user is offline at once
                    self.send(BYE)
                    break
                if self.name is None:
                    login = LOGIN.fullmatch(line)
                    if not login:
                        self.send(UNRECOGNIZED)
                    elif self.server.log_in(self, *login.groups()):
                        self.la.settimeout(None)
                        self.send(AUTH_OK)
                    else:
                        failures += 1
                        failed = b"102 Authentication Failed\n" if self.server.bug == "auth-case" else AUTH_FAILED
                        self.send(failed)
                        duplicate = self.server.find(login.group(1)) is not None
                        self.refused_duplicate = self.refused_duplicate or duplicate
                        if self.server.bug == "duplicate-deadlock" and duplicate:
                            self.server.lock.acquire()  # never released
                        if failures >= self.server.args.max_login_failures:
                            break
                elif self.lb is None:
                    port = PORT.fullmatch(line)
                    if not port or int(port.group(1)) > 65535:
                        self.send(UNRECOGNIZED)
                    elif not self.connect_lb(int(port.group(1))):
                        self.send(LB_FAILED)
                        break
                    else:
                        self.send(LB_OK)
                else:
                    self.handle_ready(line)
                if self.ended:
                    break
        except OSError:
            pass  # the login timeout, or La failed
        self.end()

    def connect_lb(self, port):
        try:
            lb = socket.create_connection((self.peer_ip, port), timeout=self.server.args.connect_timeout)
        except OSError:
            return False
        lb.settimeout(None)
        with self.lock:
            if self.ended:
                close(lb)
                return False
            self.lb = lb
        threading.Thread(target=self.read_lb, daemon=True).start()
        threading.Thread(target=self.deliver_forever, daemon=True).start()
        return True

    def handle_ready(self, line):
        to, toall = TO.fullmatch(line), TOALL.fullmatch(line)
        if line == b"/list":
            self.send(b" ".join([b"301"] + self.server.online_names(self)) + b"\n")
        elif to:
            target, content = to.groups()
            outcome = Outcome(1)
            recipient = self.server.find(target)
            if recipient is None or not recipient.enqueue(b"/from " + self.name + b" " + content + b"\n", outcome, self):
                outcome.settle(False)
            self.send(DELIVERED if outcome.wait() else DELIVERY_FAILED)
        elif toall:
            word = b"/broadcast " if self.server.bug == "broadcast-word" else b"/broadcastfrom "
            message = word + self.name + b" " + toall.group(1) + b"\n"
            recipients = [s for s in self.server.online_sessions() if s is not self]
            outcome = Outcome(len(recipients))
            for recipient in recipients:
                if not recipient.enqueue(message, outcome, self):
                    outcome.settle(False)
            ok = outcome.wait()
            if self.server.bug != "toall-silent":
                self.send(DELIVERED if ok else DELIVERY_FAILED)
        else:
            self.send(UNRECOGNIZED)


class Server:
    def __init__(self, args, users):
        self.args = args
        self.bug = args.bug
        self.users = users
        self.lock = threading.Lock()
        self.online = {}  # name -> Session, in login order

    def log_in(self, session, user, password):
        # The users never change: a wrong password is refused without the lock.
        if self.users.get(user) != password:
            return False
        with self.lock:
            if user in self.online:
                return False
            self.online[user] = session
            session.name = user
            return True

    def go_offline(self, session):
        with self.lock:
            if session.name is not None and self.online.get(session.name) is session:
                del self.online[session.name]

    def find(self, name):
        with self.lock:
            return self.online.get(name)

    def online_sessions(self):
        with self.lock:
            return list(self.online.values())

    def online_names(self, asker):
        with self.lock:
            return [asker.name] + [name for name in self.online if name != asker.name]


def load_users(path):
    users = {}
    with open(path, "rb") as file:
        for number, raw in enumerate(file.read().split(b"\n"), 1):
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line or line.startswith(b"#"):
                continue
            fields = line.split(b" ")
            if len(fields) != 2 or not all(fields) or fields[0] in users:
                print(f"{path}: line {number}: expected `username password`, each user once", file=sys.stderr)
                sys.exit(2)
            users[fields[0]] = fields[1]
    return users


def main():
    parser = Parser(description="A small threaded instant-messaging server (docs/protocol.md).")
    parser.add_argument("port", type=port_number, help="TCP port to listen on (0: the system picks one)")
    parser.add_argument("users_file", help="the accounts, `username password` a line")
    parser.add_argument("--bind", default="0.0.0.0", help="the address to listen on")
    parser.add_argument("--ack-timeout", type=duration, default=10, help="how long a 302 is waited for (10s)")
    parser.add_argument("--connect-timeout", type=duration, default=5, help="how long connecting Lb may take (5s)")
    parser.add_argument("--login-timeout", type=duration, default=300, help="how long a new connection may take to log in (300s)")
    parser.add_argument("--max-login-failures", type=count, default=5, help="failed logins in a row before the connection is closed (5)")
    parser.add_argument("--max-line", type=count, default=65536, help="the longest line, \\n included (65536)")
    parser.add_argument("--max-queue", type=count, default=1024, help="messages that may wait for one recipient (1024)")
    parser.add_argument("--bug", choices=["auth-case", "broadcast-word", "toall-silent", "duplicate-deadlock", "duplicate-close-deadlock"])
    args = parser.parse_args()
    try:
        users = load_users(args.users_file)
    except OSError as error:
        print(f"{args.users_file}: {error}", file=sys.stderr)
        sys.exit(2)
    server = Server(args, users)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(128)
    host, port = listener.getsockname()
    print(f"listening on {host}:{port}", flush=True)
    try:
        while True:
            la, peer = listener.accept()
            la.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = Session(server, la, peer[0])
            threading.Thread(target=session.serve, daemon=True).start()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
