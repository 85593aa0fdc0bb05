"""`vqedit bench chaos`: malformed input and `kill -9` against a real daemon, counted.

Usage:
    vqedit bench chaos [--student FILE --model DIR --head FILE] [--inputs 5000] [--kills 20]
                       [--seed 0] [--json PATH]

In private directories (never the user's daemon), in exact mode so that any result can be
compared with a fresh pass of the same text:
1. `--inputs` malformed inputs, each on a new connection, drawn from a seeded generator: frames
   of random bytes, well-framed requests with random methods, ids and parameters, edits out of
   range, oversize headers and connections cut inside a frame. `replies` counts the answers to
   well-framed requests, `unanswered` those left without one (a hang), `crashes` the times the
   daemon died or changed, and `wrong_results` a witness document whose results changed.
2. `--kills` times `kill -9` of the daemon while a client that recovers (the language server's
   kind) types into a document: the odd ones while edits are still being sent, the even ones
   after the last keystroke. Each time the newest version must come back from a new daemon,
   with the client's text, equal to a fresh pass of that text: `lost_edits` counts the times it
   did not, `recovery_s_*` the time from the kill to those results (model load included).
Prints one JSON line of counts (and writes it to `--json`).
"""

import argparse
import json
import os
import random
import signal
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient
from vqedit.daemon.lifecycle import running_pid
from vqedit.daemon.paths import Paths
from vqedit.lab.corpus import bbc_articles
from vqedit.lab.private_daemon import (
    add_daemon_model_arguments,
    daemon_model_arguments,
    private_daemon_dirs,
)
from vqedit.main import CliError
from vqedit.text.edit import Edit

REPLY_TIMEOUT_S = 30.0  # a well-framed request unanswered this long counts as a hang
HEALTH_EVERY = 100  # inputs between checks that the daemon is the same and the witness intact
EDITS_PER_KILL = 6  # keystrokes typed around each kill
SCORE_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_model_arguments(parser)
    parser.add_argument("--inputs", type=int, default=5000, help="malformed inputs to send")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 recoveries to try")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the JSON line here")


def run(args: argparse.Namespace) -> int:
    if args.inputs < 0 or args.kills < 0:
        raise CliError("--inputs and --kills must be ≥ 0")
    daemon_args = [*daemon_model_arguments(args), "--delta", "0", "--compact-after-s", "3600"]
    rng = random.Random(args.seed)
    text = " ".join(bbc_articles()[0].text.split()[:120])
    with private_daemon_dirs() as paths:
        report = {"bench": "chaos", "seed": args.seed,
                  **_malformed(paths, daemon_args, text, args.inputs, rng),
                  **_kills(paths, daemon_args, text, args.kills, rng)}
    line = json.dumps(report)
    if args.json:
        args.json.write_text(line + "\n")
    print(line)
    return 0


# --- malformed input ------------------------------------------------------------------------

def _malformed(paths: Paths, daemon_args: list[str], text: str, inputs: int,
               rng: random.Random) -> dict[str, Any]:
    counts = {"inputs": inputs, "replies": 0, "unanswered": 0, "crashes": 0, "wrong_results": 0}
    with DaemonClient(daemon_args=daemon_args, paths=paths) as witness:
        witness.open("witness", text, 1)
        before = witness.wait_for("witness", 1, timeout=600)
        pid = witness.welcome.pid
        for number in tqdm(range(1, inputs + 1), desc="malformed inputs", unit="input"):
            framed = _send_one(paths, rng)
            if framed is not None:
                counts["replies" if framed else "unanswered"] += 1
            if number % HEALTH_EVERY == 0 or number == inputs:
                try:
                    alive = witness.stats()["pid"] == pid
                except (ConnectionError, wire.ProtocolError):
                    alive = False
                if not alive:
                    counts["crashes"] += 1
                    pid = witness.welcome.pid
                if witness.results("witness") != before:
                    counts["wrong_results"] += 1
        witness.shutdown()
    return counts


def _send_one(paths: Paths, rng: random.Random) -> bool | None:
    """One malformed input on a new connection: whether a well-framed request was answered,
    or None for input that need not be (an oversize or cut frame)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT_S)
    sock.connect(str(paths.socket))
    try:
        if rng.random() < 0.7:
            _request(sock, "hello", {"protocol": wire.PROTOCOL_VERSION, "client": "chaos"})
        kind = rng.choice(("bytes", "request", "request", "edit", "oversize", "cut"))
        if kind == "oversize":
            sock.sendall(wire.HEADER.pack(wire.MAX_FRAME + rng.randrange(1, 2**20)))
            return None
        if kind == "cut":
            sock.sendall(wire.HEADER.pack(rng.randrange(2, 4096)) + rng.randbytes(1))
            return None
        if kind == "bytes":
            payload = rng.randbytes(rng.randrange(0, 64))
            sock.sendall(wire.HEADER.pack(len(payload)) + payload)
        elif kind == "request":
            method = rng.choice([*wire.METHODS, "", "nonsense", "open "])
            method = "stats" if method in ("shutdown", "reload") else method
            sock.sendall(wire.encode({"id": _value(rng, 1), "method": method,
                                      "params": _value(rng, 3)}))
        else:
            _request(sock, "open", {"uri": "mine", "version": 3, "text": "Some prose here."})
            start, end = rng.randrange(-5, 40), rng.randrange(-5, 40)
            sock.sendall(wire.encode({"id": 9, "method": "change", "params": {
                "uri": rng.choice(["mine", "other"]), "version": rng.randrange(-2, 6),
                "edits": [{"start": start, "end": end, "text": _value(rng, 0)}]}}))
        return _reply(sock) is not None
    except TimeoutError:
        return False
    except (ConnectionError, wire.ProtocolError):
        return False
    finally:
        sock.close()


def _request(sock: socket.socket, method: str, params: dict) -> None:
    sock.sendall(wire.encode({"id": 1, "method": method, "params": params}))
    _reply(sock)


def _reply(sock: socket.socket) -> dict | None:
    """The next response (pushed notifications skipped), or None if the daemon closed."""
    while (payload := wire.recv_frame(sock)) is not None:
        message = wire.decode(payload)
        if "id" in message:
            return message
    return None


def _value(rng: random.Random, depth: int) -> Any:
    """A random msgpack value: the edges of each type, nested up to `depth`."""
    kinds = ["none", "bool", "int", "float", "str", "bytes"] + ["list", "map"] * (depth > 0)
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.choice([0, -1, 1, 2**53, 2**53 + 1, -2**63, 2**64 - 1, rng.randrange(-9, 99)])
    if kind == "float":
        return rng.choice([0.5, float("nan"), float("inf"), -1e308])
    if kind == "str":
        return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0xA0, 0xD7FF)]))
                       for _ in range(rng.randrange(0, 12)))
    if kind == "bytes":
        return rng.randbytes(rng.randrange(0, 12))
    if kind == "list":
        return [_value(rng, depth - 1) for _ in range(rng.randrange(0, 4))]
    return {_value(rng, 0) if rng.random() < 0.2 else rng.choice(["uri", "version", "text",
                                                                 "edits", "labels", "x"]):
            _value(rng, depth - 1) for _ in range(rng.randrange(0, 4))}


# --- kill -9 --------------------------------------------------------------------------------

def _kills(paths: Paths, daemon_args: list[str], text: str, kills: int,
           rng: random.Random) -> dict[str, Any]:
    arrived: list[tuple[float, wire.Results]] = []
    client = DaemonClient(daemon_args=daemon_args, paths=paths, recover=True,
                          on_results=lambda r: arrived.append((time.monotonic(), r)))
    recovery, lost, version = [], 0, 1
    client.open("typed", text, version)
    client.wait_for("typed", version, timeout=600)
    for number in tqdm(range(kills), desc="kill -9", unit="kill"):
        during = number % 2 == 1  # odd: while typing; even: after the last keystroke
        expected = client.text("typed")
        for keystroke in range(EDITS_PER_KILL):
            at = rng.randrange(len(expected) + 1)
            letter = rng.choice("aeiou ")
            version += 1
            client.change("typed", version, [Edit(at, at, letter)])
            expected = expected[:at] + letter + expected[at:]
            if during and keystroke == EDITS_PER_KILL // 2:
                killed = _kill(paths)
        if not during:
            client.wait_for("typed", version, timeout=600)
            killed = _kill(paths)
        newest = version
        try:
            while not any(at > killed and r.version == newest for at, r in arrived):
                if time.monotonic() - killed > 600:
                    raise TimeoutError
                time.sleep(0.01)
        except TimeoutError:
            lost += 1
            continue
        recovery.append(next(at for at, r in arrived if at > killed and r.version == newest)
                        - killed)
        if client.text("typed") != expected or not _fresh(client, expected, newest, number):
            lost += 1
    client.shutdown()
    return {"kills": kills, "lost_edits": lost,
            "recovery_s_median": round(statistics.median(recovery), 3) if recovery else None,
            "recovery_s_max": round(max(recovery), 3) if recovery else None}


def _kill(paths: Paths) -> float:
    pid = running_pid(paths)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def _fresh(client: DaemonClient, text: str, version: int, number: int) -> bool:
    """Whether the recovered results equal a fresh pass of the same text: the same labels,
    scores within SCORE_TOLERANCE (exact mode's incremental edits equal a full pass to ~1e-6;
    scores travel rounded)."""
    got = client.wait_for("typed", version, timeout=600)
    uri = f"fresh-{number}"  # a new document each time: the client keeps results per uri
    client.open(uri, text, 1)
    fresh = client.wait_for(uri, 1, timeout=600)
    client.close(uri)
    return (got.label == fresh.label and got.scores.keys() == fresh.scores.keys()
            and all(abs(got.scores[k] - fresh.scores[k]) <= SCORE_TOLERANCE for k in got.scores)
            and [p.label for p in got.paragraphs] == [p.label for p in fresh.paragraphs])
