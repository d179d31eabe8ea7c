#!/usr/bin/env python3
"""A small client for the instant-messaging protocol of docs/protocol.md §4.

    python3 client.py [--bug NAME] <server-ip> <server-port>

The example for `im-check client -- python3 client.py`. With `--bug NAME` it misbehaves on
purpose, so that im-check's own tests can see the right checks fail:

    ack-word     acknowledges deliveries with "302 Message receipt success"
    prompt-word  asks "Please input your username:" (for "user name"), with no newline after
                 it, as Python's input() prints a prompt

The main thread reads commands from standard input and the answers from La; one thread reads
Lb, prints each message and acknowledges it. Standard library only.
"""

import argparse
import os
import queue
import socket
import sys
import threading

USER_PROMPT = b"Please input your user name:"
MISWORDED_USER_PROMPT = b"Please input your username:"
PASSWORD_PROMPT = b"Please input your password:"
AUTH_OK = b"101 Authentication successful"
LB_OK = b"201 Build connection successful"
BYE = b"310 Bye bye"
MAX_LINE = 65536  # the server's default line bound, \n included (§1)
TOO_LONG = object()

output_lock = threading.Lock()
exiting = threading.Event()


def say(line):
    """Prints one whole line; lines from both threads never interleave."""
    with output_lock:
        sys.stdout.buffer.write(line + b"\n")
        sys.stdout.buffer.flush()


user_prompt = USER_PROMPT


def prompt(text):
    with output_lock:
        sys.stdout.buffer.write(text if text == MISWORDED_USER_PROMPT else text + b"\n")
        sys.stdout.buffer.flush()
    line = sys.stdin.buffer.readline()
    return None if not line else line.rstrip(b"\r\n")


def die(message):
    """The server went away (or never came): one line on stderr, exit code 1, now."""
    with output_lock:
        sys.stdout.buffer.flush()
        sys.stderr.write(f"error: {message}\n")
        sys.stderr.flush()
    os._exit(1)


def lines_of(sock, max_line=MAX_LINE):
    """Yields the lines of sock, or TOO_LONG for one past max_line, as soon as it is past."""
    held = b""
    discarding = False
    while True:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            return
        held += data
        while True:
            newline = held.find(b"\n")
            if discarding:
                if newline < 0:
                    held = b""
                    break
                held, discarding = held[newline + 1:], False
                continue
            if newline < 0:
                if len(held) >= max_line:
                    yield TOO_LONG
                    held, discarding = b"", True
                break
            line, held = held[:newline], held[newline + 1:]
            if newline + 1 > max_line:
                yield TOO_LONG
            else:
                yield line[:-1] if line.endswith(b"\r") else line


def read_la(la, answers):
    """Hands La's lines to the main thread; the end of La ends the client unless leaving."""
    for line in lines_of(la):
        if line is TOO_LONG:
            die(f"the server sent a line longer than {MAX_LINE} bytes")
        answers.put(line)
    if not exiting.is_set():
        die("the server closed the connection")
    answers.put(None)


def read_lb(lb, ack):
    for line in lines_of(lb):
        if line is TOO_LONG:
            # Acknowledged as any other line, but too long to show (§4.5).
            with output_lock:
                sys.stderr.write(f"warning: the server sent a line longer than {MAX_LINE} bytes on Lb\n")
                sys.stderr.flush()
            try:
                lb.sendall(ack)
            except OSError:
                break
            continue
        if not line.startswith((b"/from ", b"/broadcastfrom ")):
            with output_lock:
                sys.stderr.write("warning: the server sent a line that is no message on Lb\n")
                sys.stderr.flush()
        say(line)
        try:
            lb.sendall(ack)
        except OSError:
            break
    if not exiting.is_set():
        die("the server closed the message connection")


def answer(answers, timeout=None):
    try:
        line = answers.get(timeout=timeout)
    except queue.Empty:
        line = None
    if line is None:
        die("the server closed the connection")
    return line


def send(la, data):
    try:
        la.sendall(data)
    except OSError:
        die("the server closed the connection")


def leave(la, answers):
    exiting.set()
    send(la, b"/exit\n")
    # Lb may close before 310 arrives on La; 310 still gets a second.
    line = answer(answers, timeout=1)
    say(line)
    os._exit(0 if line == BYE else 1)


def port_number(text):
    """A TCP port, 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port from 1 to 65535")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument told in one line and exit code 2 (§6), not its usage."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: {message} (try --help)\n")
        sys.exit(2)


def main():
    parser = Parser(description="A small instant-messaging client (docs/protocol.md §4).")
    parser.add_argument("--bug", choices=["ack-word", "prompt-word"])
    parser.add_argument("server_ip", help="the server: an IP address or a host name")
    parser.add_argument("server_port", type=port_number, help="the server's TCP port")
    args = parser.parse_args()
    global user_prompt
    if args.bug == "prompt-word":
        user_prompt = MISWORDED_USER_PROMPT
    ack = b"302 Message receipt success\n" if args.bug == "ack-word" else b"302 Message receipt successful\n"
    try:
        la = socket.create_connection((args.server_ip, args.server_port), timeout=5)
        la.settimeout(None)
    except socket.gaierror as error:
        # A name that does not resolve is a bad argument (§4.1).
        print(f"error: cannot resolve {args.server_ip}: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:
        print(f"error: cannot connect to {args.server_ip}:{args.server_port}: {error}", file=sys.stderr)
        sys.exit(1)
    answers = queue.Queue()
    threading.Thread(target=read_la, args=(la, answers), daemon=True).start()

    while True:
        user = prompt(user_prompt)
        password = None if user is None else prompt(PASSWORD_PROMPT)
        if password is None:
            leave(la, answers)
        if not user or not password or b" " in user or b" " in password:
            say(b"user names and passwords are one word (no spaces), not empty")
            continue
        send(la, b"/login " + user + b" " + password + b"\n")
        reply = answer(answers)
        say(reply)
        if reply == AUTH_OK:
            break

    listener = socket.socket()
    listener.bind((la.getsockname()[0], 0))
    listener.listen(1)
    send(la, b"/port %d\n" % listener.getsockname()[1])
    reply = answer(answers)
    say(reply)
    if reply != LB_OK:
        os._exit(1)
    while True:
        lb, (peer_ip, _) = listener.accept()
        if peer_ip == la.getpeername()[0]:
            break
        lb.close()  # only the server may open Lb
    listener.close()
    threading.Thread(target=read_lb, args=(lb, ack), daemon=True).start()

    for raw in iter(sys.stdin.buffer.readline, b""):
        command = raw.rstrip(b"\r\n")
        if not command:
            continue
        if not sys.stdin.isatty():
            say(command)  # a piped run reads as a transcript
        if command == b"/exit":
            leave(la, answers)
        send(la, command + b"\n")
        say(answer(answers))
    leave(la, answers)


if __name__ == "__main__":
    main()
