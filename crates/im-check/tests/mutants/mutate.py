#!/usr/bin/env python3
"""Writes broken copies of the Python doubles (tests/doubles/), one bug each, for the mutation
suite of im-check (tests/im_check_mutants.rs).

    python3 tests/mutants/mutate.py OUT_DIR

Each row of MUTANTS below is a bug students make, as a patch of one line of server.py or
client.py (`search` must occur exactly once; a few bugs take two such patches). The copy goes to
OUT_DIR/<name>/ beside an unchanged copy of the other double, and OUT_DIR/mutants.json lists
them: name, file, description, and `equivalent` (true for a change no client or server could
tell apart, which im-check must pass). Standard library only.
"""

import json
import pathlib
import shutil
import sys

DOUBLES = pathlib.Path(__file__).resolve().parent.parent / "doubles"

S, C = "server.py", "client.py"

# (name, file, [(search, replace), ...], description, equivalent)
MUTANTS = [
    # docs/protocol.md §1, wire basics and the line bound.
    ("no-cr-strip", S, [('frames.append(line[:-1] if line.endswith(b"\\r") else line)', "frames.append(line)")],
     "a \\r before \\n is kept as part of the line", False),
    ("bound-off-by-one", S, [("if newline + 1 > self.max_line:", "if newline + 1 >= self.max_line:")],
     "a line of exactly --max-line bytes is refused", False),
    ("bound-too-small", S, [('"--max-line", type=count, default=65536', '"--max-line", type=count, default=1024')],
     "the line bound is 1 KB, so a 2 KB /to is refused", False),
    ("no-bound", S, [("if newline + 1 > self.max_line:", "if False:"),
                     ("if len(self.held) >= self.max_line:", "if False:")],
     "no line bound at all: a 70 KB /to is delivered, a line without \\n held whatever its size", False),
    ("no-bound-on-partial-lines", S, [("if len(self.held) >= self.max_line:", "if False:")],
     "a line without its \\n is held whatever its length", False),
    # §2, the exact strings.
    ("auth-ok-trailing-space", S, [('AUTH_OK = b"101 Authentication successful\\n"', 'AUTH_OK = b"101 Authentication successful \\n"')],
     "101 with a space before its \\n", False),
    ("auth-failed-capital", S, [('AUTH_FAILED = b"102 Authentication failed\\n"', 'AUTH_FAILED = b"102 Authentication Failed\\n"')],
     "102 Authentication Failed (capital F)", False),
    ("delivered-typo", S, [('DELIVERED = b"303 Message delivery successful\\n"', 'DELIVERED = b"303 Message delivery success\\n"')],
     "303 Message delivery success (the appendix's typo)", False),
    ("broadcast-word", S, [('else b"/broadcastfrom "', 'else b"/broadcast "')],
     "/broadcast instead of /broadcastfrom", False),
    ("list-comma", S, [('self.send(b" ".join([b"301"] + self.server.online_names(self)) + b"\\n")',
                        'self.send(b"301 " + b",".join(self.server.online_names(self)) + b"\\n")')],
     "301 with the names separated by commas", False),
    # §2-§3, what is accepted where.
    ("list-loose", S, [('if line == b"/list":', 'if line.strip() == b"/list":')],
     "/list with a trailing space is taken as /list", False),
    ("commands-any-case", S, [('if line == b"/list":', 'if line.lower() == b"/list":')],
     "/LIST is taken as /list", False),
    ("to-loose-spaces", S, [('TO = re.compile(rb"/to (" + TOKEN + rb") ([^\\n]+)", re.DOTALL)',
                             'TO = re.compile(rb"/to +(" + TOKEN + rb") +([^\\n]+)", re.DOTALL)')],
     "/to takes several spaces between its fields (and eats the content's leading ones)", False),
    ("login-loose", S, [('LOGIN = re.compile(rb"/login (" + TOKEN + rb") (" + TOKEN + rb")")',
                         'LOGIN = re.compile(rb"/login +(" + TOKEN + rb") +(" + TOKEN + rb") *")')],
     "/login takes extra spaces", False),
    ("port-leading-zero", S, [('PORT = re.compile(rb"/port ([1-9][0-9]{0,4})")', 'PORT = re.compile(rb"/port ([0-9]{1,5})")')],
     "/port 0 and /port 080 are taken (and fail with 202)", False),
    ("port-no-range", S, [("if not port or int(port.group(1)) > 65535:", "if not port:")],
     "/port 65536 is taken", False),
    ("content-stripped", S, [("target, content = to.groups()", "target, content = to.group(1), to.group(2).strip()")],
     "the content of /to is stripped of its spaces", False),
    # §3, Unauthenticated.
    ("duplicate-login-allowed", S, [("            if user in self.online:", "            if False:")],
     "a user already online can log in a second time", False),
    ("duplicate-deadlock", S, [('if self.server.bug == "duplicate-deadlock" and duplicate:', "if duplicate:")],
     "the lock is kept after a duplicate login is refused", False),
    ("duplicate-close-deadlock", S, [('if self.server.bug == "duplicate-close-deadlock" and self.refused_duplicate:',
                                      "if self.refused_duplicate:")],
     "the lock is kept when a refused duplicate login's connection closes", False),
    ("max-failures-ignored", S, [("if failures >= self.server.args.max_login_failures:", "if False:")],
     "the connection stays open after --max-login-failures failures", False),
    ("login-timeout-ignored", S, [("self.la.settimeout(self.server.args.login_timeout)", "self.la.settimeout(None)")],
     "a connection that never logs in is kept forever", False),
    # §3, Authenticated.
    ("lb-failed-stays-open", S, [("                        self.send(LB_FAILED)\n                        break",
                                  "                        self.send(LB_FAILED)\n                        continue")],
     "after 202 the connection stays open and the user online", False),
    # §3, Ready.
    ("list-any-order", S, [("return [asker.name] + [name for name in self.online if name != asker.name]",
                            "return list(self.online)")],
     "/list in login order, without the asker first", False),
    ("list-sorted", S, [("return [asker.name] + [name for name in self.online if name != asker.name]",
                         "return [asker.name] + sorted(name for name in self.online if name != asker.name)")],
     "/list sorted by name after the asker", False),
    ("to-answers-at-once", S, [("self.send(DELIVERED if outcome.wait() else DELIVERY_FAILED)", "self.send(DELIVERED)")],
     "/to is answered 303 at once, without waiting for the 302", False),
    ("to-offline-303", S, [("                outcome.settle(False)\n            self.send(DELIVERED if outcome.wait()",
                            "                outcome.settle(True)\n            self.send(DELIVERED if outcome.wait()")],
     "/to an offline or unknown user is answered 303", False),
    ("to-no-lb-queued", S, [("if self.ended or self.lb is None or self.outbox.qsize()", "if self.ended or self.outbox.qsize()")],
     "a message to a user without Lb is queued (and never settles)", False),
    ("toall-to-sender-too", S, [("recipients = [s for s in self.server.online_sessions() if s is not self]",
                                 "recipients = self.server.online_sessions()")],
     "/toall is also sent to its sender", False),
    ("toall-silent", S, [('if self.server.bug != "toall-silent":', "if False:")],
     "/toall is delivered but never answered", False),
    # §3, Delivery over Lb.
    ("any-ack-accepted", S, [("if reply == RECEIPT:", "if reply is not None:")],
     "any line on Lb is taken as the 302", False),
    ("ack-timeout-ignored", S, [("reply = self.lb_lines.get(timeout=self.server.args.ack_timeout)", "reply = self.lb_lines.get()")],
     "a recipient that never acknowledges holds its senders forever", False),
    ("queued-reported-delivered", S, [("                if item is not None:\n                    item[1].settle(False)",
                                       "                if item is not None:\n                    item[1].settle(True)")],
     "messages queued for a recipient that left are reported delivered", False),
    ("queued-from-gone-sender-delivered", S, [("            if sender.ended:", "            if False:")],
     "a message queued by a sender that has gone is still delivered", False),
    ("queue-unbounded", S, [("if self.ended or self.lb is None or self.outbox.qsize() >= self.server.args.max_queue:",
                             "if self.ended or self.lb is None:")],
     "a recipient's queue has no bound: a message past --max-queue waits instead of failing", False),
    ("queue-one-too-long", S, [("self.outbox.qsize() >= self.server.args.max_queue", "self.outbox.qsize() > self.server.args.max_queue")],
     "the queue holds --max-queue messages besides the outstanding one, and one more", False),
    ("lb-unbounded", S, [("for line in read_lines(self.lb, self.server.args.max_line):", 'for line in read_lines(self.lb, float("inf")):')],
     "lines on Lb have no bound: an over-long answer is waited out to its \\n or the ack timeout", False),
    ("ack-timeout-from-queue", S, [("import threading\n", "import threading\nimport time\n"),
                                   ("self.outbox.put((line, outcome, sender))", "self.outbox.put((line, outcome, sender, time.monotonic()))"),
                                   ("line, outcome, sender = item", "line, outcome, sender, queued_at = item"),
                                   ("reply = self.lb_lines.get(timeout=self.server.args.ack_timeout)",
                                    "reply = self.lb_lines.get(timeout=max(0.001, queued_at + self.server.args.ack_timeout - time.monotonic()))")],
     "the ack timeout counts from when a message was queued, not from when it was sent", False),
    ("ack-of-gone-sender-assumed", S, [("if reply == RECEIPT:", "if reply == RECEIPT or sender.ended:")],
     "a delivery whose sender has left counts as acknowledged when it times out: the silent recipient stays online", False),
    ("unasked-lb-line-ignored", S, [("                break  # a line nobody asked for", "                continue  # a line nobody asked for")],
     "a line on Lb while nothing is outstanding is ignored", False),
    # §5, the users file, and §6, the command line.
    ("users-crlf-kept", S, [('line = raw[:-1] if raw.endswith(b"\\r") else raw', "line = raw")],
     "a users file's \\r\\n line ends leave a \\r at the end of each password", False),
    ("users-comments-read", S, [('if not line or line.startswith(b"#"):', "if not line:")],
     "lines of the users file that start with # are read as accounts", False),
    ("users-error-exit-1", S, [("each user once\", file=sys.stderr)\n                sys.exit(2)", "each user once\", file=sys.stderr)\n                sys.exit(1)")],
     "a bad users file stops the server with exit code 1 (sys.exit(message))", False),
    ("users-duplicate-allowed", S, [("if len(fields) != 2 or not all(fields) or fields[0] in users:", "if len(fields) != 2 or not all(fields):")],
     "a user name given twice in the users file is taken (the last line wins)", False),
    ("logs-login-lines", S, [("login = LOGIN.fullmatch(line)", 'login = LOGIN.fullmatch(line); print("login attempt:", line, file=sys.stderr)')],
     "every /login line, password and all, is printed on standard error", False),
    ("listening-line-asked-port", S, [('print(f"listening on {host}:{port}", flush=True)', 'print(f"listening on {host}:{args.port}", flush=True)')],
     "the listening line shows the port asked for (0), not the one the system gave", False),
    ("server-usage-on-bad-args", S, [("parser = Parser(description=", "parser = argparse.ArgumentParser(description=")],
     "a bad argument gets argparse's usage and error, two lines", False),
    ("server-port-unchecked", S, [("if not text.isdigit() or int(text) > 65535:", "if not text.isdigit():")],
     "port 65536 is taken, and bind fails with a traceback and exit code 1", False),
    ("zero-timeout-accepted", S, [("if not match or int(match.group(1)) == 0:", "if not match:")],
     "--ack-timeout 0s is taken", False),
    ("help-hides-max-queue", S, [('help="messages that may wait for one recipient (1024)"', "help=argparse.SUPPRESS")],
     "--help does not show --max-queue", False),
    # §3, Ends of a session.
    ("eof-stays-online", S, [("        self.server.go_offline(self)\n        self.outbox.put(None)",
                              "        self.outbox.put(None)")],
     "a client whose connection ends stays online (only /exit takes it off)", False),
    ("exit-keeps-connection", S, [("                    self.send(BYE)\n                    break",
                                   "                    self.send(BYE)\n                    continue")],
     "after 310 the connection stays open", False),
    ("reset-kills-thread", S, [("        except OSError:\n            return\n        if not data:",
                                "        except OSError:\n            raise SystemExit  # the thread just dies\n        if not data:")],
     "a reset kills the client's thread without cleaning up: the user stays online", False),
    ("sigpipe", S, [("import threading\n", "import threading, signal; signal.signal(signal.SIGPIPE, signal.SIG_DFL)\n"),
                    ("            self.end()\n            return False", "            return True  # a failed write is ignored")],
     "writes to a vanished client are not checked, and SIGPIPE kills the server", False),
    # Equivalent: nothing on the wire changes.
    ("recv-smaller", S, [("data = sock.recv(8192)", "data = sock.recv(1000)")],
     "reads 1000 bytes at a time", True),
    ("backlog-smaller", S, [("listener.listen(128)", "listener.listen(16)")],
     "a shorter listen backlog", True),
    ("queue-smaller", S, [('"--max-queue", type=count, default=1024', '"--max-queue", type=count, default=512')],
     "a shorter delivery queue", True),
    ("threads-not-daemon", S, [("threading.Thread(target=session.serve, daemon=True)", "threading.Thread(target=session.serve)")],
     "client threads are not daemons", True),

    # docs/protocol.md §4, the client.
    ("user-prompt-worded", C, [('USER_PROMPT = b"Please input your user name:"', 'USER_PROMPT = b"Please input your username:"')],
     "the user name prompt says username", False),
    ("prompt-trailing-space", C, [('text if text == MISWORDED_USER_PROMPT else text + b"\\n"', 'text if text == MISWORDED_USER_PROMPT else text + b" \\n"')],
     "each prompt is followed by a space on its line", False),
    ("prompt-no-newline", C, [('text if text == MISWORDED_USER_PROMPT else text + b"\\n"', "text")],
     "the prompts are printed without \\n, as input() prints them", False),
    ("login-double-space", C, [('send(la, b"/login " + user + b" " + password + b"\\n")', 'send(la, b"/login " + user + b"  " + password + b"\\n")')],
     "/login with two spaces before the password", False),
    ("no-retry-on-102", C, [("        if reply == AUTH_OK:\n            break", "        if reply != AUTH_OK:\n            os._exit(1)\n        break")],
     "a 102 ends the client instead of asking again", False),
    ("login-401-taken-for-101", C, [("        if reply == AUTH_OK:\n            break", '        if not reply.startswith(b"102"):\n            break')],
     "any answer to /login but 102 is taken for success (401 too)", False),
    ("bad-login-sent", C, [('        if not user or not password or b" " in user or b" " in password:', "        if not user or not password:")],
     "a password with a space is sent (the server can only answer 401)", False),
    ("lb-from-anyone", C, [("        if peer_ip == la.getpeername()[0]:", "        if True:")],
     "Lb is taken from whoever connects first", False),
    ("other-lb-line-unwarned", C, [('        if not line.startswith((b"/from ", b"/broadcastfrom ")):', "        if False:")],
     "a line on Lb that is no message is shown without a warning", False),
    ("port-wrong", C, [('send(la, b"/port %d\\n" % listener.getsockname()[1])', 'send(la, b"/port %d\\n" % (listener.getsockname()[1] + 1))')],
     "/port names a port one above the one it listens on", False),
    ("lb-failed-exit-0", C, [("    if reply != LB_OK:\n        os._exit(1)", "    if reply != LB_OK:\n        os._exit(0)")],
     "202 ends the client with code 0", False),
    ("commands-without-newline", C, [('        send(la, command + b"\\n")', "        send(la, command)")],
     "typed commands are sent without \\n", False),
    ("empty-lines-sent", C, [("        if not command:\n            continue", "        if not command:\n            pass")],
     "empty lines are sent", False),
    ("ack-word", C, [('else b"302 Message receipt successful\\n"', 'else b"302 Message receipt success\\n"')],
     "acknowledges with 302 Message receipt success", False),
    ("ack-without-newline", C, [('else b"302 Message receipt successful\\n"', 'else b"302 Message receipt successful"')],
     "acknowledges without \\n", False),
    ("deliveries-not-printed", C, [("        say(line)\n        try:", "        try:")],
     "messages on Lb are acknowledged but not printed", False),
    ("exit-code-1", C, [("os._exit(0 if line == BYE else 1)", "os._exit(1)")],
     "after 310 the client exits with code 1", False),
    ("lb-eof-fatal-while-leaving", C, [('    if not exiting.is_set():\n        die("the server closed the message connection")',
                                        '    die("the server closed the message connection")')],
     "Lb's end while leaving is taken for the server going away", False),
    ("stdin-eof-no-exit", C, [("    leave(la, answers)\n\n\nif __name__", "    os._exit(0)\n\n\nif __name__")],
     "end of input ends the client without /exit", False),
    ("server-gone-exit-0", C, [("        sys.stderr.flush()\n    os._exit(1)", "        sys.stderr.flush()\n    os._exit(0)")],
     "the server going away ends the client with code 0", False),
    ("server-gone-silent", C, [('sys.stderr.write(f"error: {message}\\n")', "pass")],
     "the server going away ends the client without a word", False),
    ("client-la-unbounded", C, [("for line in lines_of(la):", 'for line in lines_of(la, float("inf")):')],
     "lines on La have no bound: a 70 KB answer is waited for and printed", False),
    ("client-bound-off-by-one", C, [("if newline + 1 > max_line:", "if newline + 1 >= max_line:")],
     "a line of exactly 65536 bytes, \\n included, is taken as too long", False),
    ("client-lb-unbounded", C, [("for line in lines_of(lb):", 'for line in lines_of(lb, float("inf")):')],
     "lines on Lb have no bound: an over-long one is acknowledged only once its \\n comes", False),
    ("overlong-lb-unacked", C, [("                lb.sendall(ack)\n            except OSError:\n                break\n            continue",
                                 "                pass\n            except OSError:\n                break\n            continue")],
     "a line on Lb past the bound is dropped without a 302", False),
    ("host-name-refused", C, [("import argparse\n", "import argparse\nimport ipaddress\n"),
                              ('parser.add_argument("server_ip", help=', 'parser.add_argument("server_ip", type=lambda text: str(ipaddress.ip_address(text)), help=')],
     "the server must be given as an IP address: a host name is a bad argument", False),
    ("unresolvable-exit-1", C, [("{error}\", file=sys.stderr)\n        sys.exit(2)", "{error}\", file=sys.stderr)\n        sys.exit(1)")],
     "a server name that does not resolve ends the client with code 1, as if no server answered", False),
    ("client-usage-on-bad-args", C, [("parser = Parser(description=", "parser = argparse.ArgumentParser(description=")],
     "a bad argument gets argparse's usage and error, two lines", False),
    ("client-port-zero-accepted", C, [("if not text.isdigit() or not 1 <= int(text) <= 65535:", "if not text.isdigit() or int(text) > 65535:")],
     "port 0 is taken, and the client fails to connect with exit code 1", False),
    ("no-server-exit-0", C, [("        sys.exit(1)\n    answers = queue.Queue()", "        sys.exit(0)\n    answers = queue.Queue()")],
     "no server to connect to ends the client with code 0", False),
    # Equivalent.
    ("client-recv-smaller", C, [("data = sock.recv(4096)", "data = sock.recv(1000)")],
     "reads 1000 bytes at a time", True),
    ("client-backlog", C, [("listener.listen(1)", "listener.listen(5)")],
     "a longer listen backlog for Lb", True),
]


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: mutate.py OUT_DIR")
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    sources = {name: (DOUBLES / name).read_text() for name in (S, C)}
    listed, names = [], set()
    for name, file, patches, description, equivalent in MUTANTS:
        if name in names:
            sys.exit(f"{name}: named twice")
        names.add(name)
        text = sources[file]
        for search, replace in patches:
            if text.count(search) != 1:
                sys.exit(f"{name}: {search!r} occurs {text.count(search)} times in {file}, not once")
            text = text.replace(search, replace)
        folder = out / name
        folder.mkdir(exist_ok=True)
        (folder / file).write_text(text)
        other = C if file == S else S
        shutil.copy(DOUBLES / other, folder / other)
        listed.append({"name": name, "file": file, "description": description, "equivalent": equivalent})
    (out / "mutants.json").write_text(json.dumps(listed, indent=1) + "\n")
    print(f"{len(listed)} mutants in {out}")


if __name__ == "__main__":
    main()
