#!/usr/bin/env python3
"""How many Master Password guesses an attacker gets, measured (issue 19, item 5).

Three attackers against one account with the default Argon2id cost
(64 MiB, t = 3, p = 4), each for SECONDS (default 60), on the release build:

  socket  talks to the agent only (a sandboxed app given the socket, a
          forwarded socket): every wrong guess goes through the back-off.
  eraser  runs as the user: deletes <state dir>/attempts and restarts the
          agent before each guess, so the back-off never starts.
  offline reads the vault and the `file` protector's Secret Key and runs
          Argon2id itself (here: the reference C `argon2` tool, one guess
          per core at a time), never asking the agent.

Prints guesses in the window and the rate per hour. Usage:
  cargo build --release --locked -p keyward -p keyward-agent
  tests/bench/backoff.py [SECONDS]
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KW = os.path.join(ROOT, "target/release/keyward")
AGENT = os.path.join(ROOT, "target/release/keyward-agent")
PW = "correct horse battery staple"
EXIT_WRONG = 6  # also for "too many failed attempts" (the back-off), told apart by its message


def backed_off(p):
    return p.returncode == EXIT_WRONG and "too many failed attempts" in p.stderr


def kw(home, args, secret=None):
    env = dict(os.environ, KEYWARD_HOME=home, KEYWARD_AGENT=AGENT, KEYWARD_PINENTRY="none")
    r, w = os.pipe()
    if secret is not None:
        os.write(w, secret.encode())
    os.close(w)
    try:
        p = subprocess.run([KW] + args + (["--password-fd", str(r)] if secret is not None else []),
                           env=env, pass_fds=(r,), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True)
    finally:
        os.close(r)
    return p


def new_account():
    home = tempfile.mkdtemp(prefix="keyward-backoff-")
    p = kw(home, ["init", "--protector", "file", "--json"], PW)
    assert p.returncode == 0, p.stderr
    assert kw(home, ["lock"]).returncode == 0
    return home


def stop(home):
    kw(home, ["agent", "stop"])
    shutil.rmtree(home, ignore_errors=True)


def socket_attacker(secs):
    home = new_account()
    guesses, start = 0, time.monotonic()
    while time.monotonic() - start < secs:
        p = kw(home, ["unlock"], f"guess {guesses}")
        if backed_off(p):
            time.sleep(0.2)
        elif p.returncode == EXIT_WRONG:
            guesses += 1
        else:
            raise SystemExit(f"unexpected exit {p.returncode}: {p.stderr}")
    stop(home)
    return guesses


def eraser(secs):
    home = new_account()
    attempts = os.path.join(home, "state", "attempts")
    guesses, start = 0, time.monotonic()
    while time.monotonic() - start < secs:
        try:
            os.remove(attempts)
        except FileNotFoundError:
            pass
        kw(home, ["agent", "stop"])
        p = kw(home, ["unlock"], f"guess {guesses}")
        if p.returncode == EXIT_WRONG and not backed_off(p):
            guesses += 1
        elif not backed_off(p):
            raise SystemExit(f"unexpected exit {p.returncode}: {p.stderr}")
    stop(home)
    return guesses


def offline(secs):
    if not shutil.which("argon2"):
        return None
    cores = os.cpu_count() or 1

    def one(i):
        subprocess.run(["argon2", "saltsaltsaltsalt", "-id", "-t", "3", "-m", "16", "-p", "4",
                        "-l", "32", "-r"], input=f"guess {i}".encode(), capture_output=True,
                       check=True)

    guesses, start = 0, time.monotonic()
    with ThreadPoolExecutor(cores) as pool:
        while time.monotonic() - start < secs:
            list(pool.map(one, range(guesses, guesses + cores)))
            guesses += cores
    return guesses / (time.monotonic() - start) * secs


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    for f in (KW, AGENT):
        if not os.path.exists(f):
            raise SystemExit(f"{f} missing: cargo build --release --locked -p keyward -p keyward-agent")
    print(f"# guesses at the Master Password in {secs:.0f} s, default Argon2id (64 MiB, t=3, p=4)")
    print(f"{'attacker':<8} {'guesses':>8} {'per hour':>10}")
    n = socket_attacker(secs)
    # The back-off's delays grow: an hour is not 60 first minutes. Per hour
    # from the schedule of SECURITY.md §12 (16 in the first, 4 after).
    print(f"{'socket':<8} {n:>8.0f} {'16, then 4':>10}  (per hour from the schedule)", flush=True)
    for name, f in (("eraser", eraser), ("offline", offline)):
        n = f(secs)
        if n is None:
            print(f"{name:<8} {'-':>8} {'-':>10}  (no argon2 tool)")
            continue
        print(f"{name:<8} {n:>8.0f} {n * 3600 / secs:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
