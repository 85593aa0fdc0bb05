"""The daemon as clients see it: a real `vqedit daemon run` process on a real Unix socket.

Every daemon here is spawned by the client library, runs a tiny student (tests/daemon_harness),
and is checked through what it sends back: results, versions, errors and stats.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.daemon_harness import (
    LABELS,
    PROSE,
    RawConnection,
    assert_matches,
    make_tiny_model,
    private_dirs,
    wait_exact,
    wait_until,
    write_head,
)
from vqedit.daemon import protocol as wire
from vqedit.daemon.client import DaemonClient, DaemonError
from vqedit.daemon.lifecycle import running_pid
from vqedit.text.edit import Edit


@pytest.fixture(scope="module")
def shared(tiny):
    """One daemon for the tests that only need one; compaction soon after edits stop."""
    with private_dirs() as paths:
        args = tiny.daemon_args("--compact-after-s", "0.3", "--idle-exit-s", "300")
        with DaemonClient(daemon_args=args, paths=paths) as first:
            yield paths, args, first


def test_several_clients_and_documents_each_get_their_own_exact_results(shared, expected):
    paths, args, first = shared
    clients = [first] + [DaemonClient(daemon_args=args, paths=paths) for _ in range(2)]
    texts = {}
    for c, client in enumerate(clients):
        for d in range(2):
            # The same uri in two sessions names two documents.
            text = PROSE if d == 0 else PROSE.replace("budget", f"budget number {c}")
            client.open(f"doc-{d}", text, 1)
            client.change(f"doc-{d}", 2, [Edit(0, 3, "A"), Edit(2, 9, "city")])
            texts[c, d] = client.text(f"doc-{d}")
    assert texts[1, 1] == PROSE.replace("budget", "budget number 1").replace("The council",
                                                                              "A city")
    assert first.welcome.pid == clients[1].welcome.pid == clients[2].welcome.pid
    for c, client in enumerate(clients):
        for d in range(2):
            results = wait_exact(client, f"doc-{d}", 2)
            assert_matches(results, expected(texts[c, d]))
            assert results.paragraphs[-1].end == len(texts[c, d])
    for client in clients[1:]:
        client.disconnect()


def test_a_newer_version_supersedes_queued_work_and_results_arrive_in_order(shared, expected):
    paths, _, _ = shared
    raw = RawConnection(paths.socket)
    assert "result" in raw.hello()
    raw.request("open", {"uri": "typed", "version": 0, "text": PROSE})
    before = raw.request("stats", {})["result"]
    # 60 keystrokes in one write: the daemon accepts each at once while its worker is busy.
    text, frames = PROSE, []
    for version in range(1, 61):
        at = 10 + version
        frames.append(wire.encode({"id": 1000 + version, "method": "change", "params": {
            "uri": "typed", "version": version,
            "edits": [{"start": at, "end": at, "text": "x"}]}}))
        text = text[:at] + "x" + text[at:]
    raw.send_bytes(b"".join(frames))
    for _ in frames:
        assert "result" in raw.reply()
    versions = []
    while not versions or versions[-1] < 60:
        versions.append(raw.notification()["params"]["version"])
    assert versions == sorted(set(versions)), "results went backwards or repeated"
    after = raw.request("stats", {})["result"]
    assert after["superseded"] > before["superseded"]
    assert after["passes"] - before["passes"] < 60
    final = None
    while final is None or not final["exact"]:  # then idle compaction makes it exact
        final = raw.notification()["params"]
    assert final["version"] == 60
    assert final["label"] == expected(text)[0]
    raw.close()


def test_a_big_document_opening_does_not_hold_up_another_clients_small_one(shared):
    """The big document's segments are computed in slices, the small document's work in
    between: its results come while the big one is still being computed, which then completes."""
    paths, args, big_client = shared
    paragraphs = [f"Paragraph {i} of a long report on the council budget." for i in range(1500)]
    big = "\n\n".join(paragraphs)
    big_client.open("big", big, 1)
    with DaemonClient(daemon_args=args, paths=paths) as small_client:
        wait_until(lambda: small_client.stats()["computing"] == "big", what="the big pass")
        small_client.open("small", PROSE, 1)
        small_client.change("small", 2, [Edit(0, 3, "A")])
        small_client.wait_for("small", 2, timeout=60)
        assert big_client.latest("big") is None, "the small document waited for the big one"
    done = big_client.wait_for("big", 1, timeout=300)
    assert len(done.paragraphs) == len(paragraphs) and done.paragraphs[-1].end == len(big)


def test_zero_shot_labels_score_a_document_until_it_goes_back_to_the_head(shared, expected):
    paths, _, client = shared
    labels = {"money": "The budget, taxes and the economy.",
              "games": "Teams playing a match in front of a crowd."}
    client.open("labelled", PROSE, 1, labels=labels)
    assert_matches(wait_exact(client, "labelled", 1), expected(PROSE, labels))
    client.change("labelled", 2, [Edit(0, 3, "A")])
    assert_matches(wait_exact(client, "labelled", 2), expected(client.text("labelled"), labels))
    client.set_labels("labelled", None)
    back = wait_until(lambda: (r := client.latest("labelled")).exact
                      and r.scores.keys() == set(LABELS) and r, what="the head's labels again")
    assert back.version == 2
    assert_matches(back, expected(client.text("labelled")))

    raw = RawConnection(paths.socket)
    raw.hello()
    raw.request("open", {"uri": "raw", "version": 1, "text": PROSE})
    for bad in ({"one": "a single label"}, {"a": "fine", "b": 3}, {"a": "fine", "b": "..."},
                ["a", "b"]):
        reply = raw.request("labels", {"uri": "raw", "labels": bad})
        assert reply["error"]["code"] == wire.ErrorCode.INVALID_PARAMS, bad
    reply = raw.request("labels", {"uri": "nowhere", "labels": None})
    assert reply["error"]["code"] == wire.ErrorCode.UNKNOWN_DOCUMENT
    raw.close()


def test_garbage_gets_errors_or_a_closed_connection_and_nobody_else_notices(shared):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    paths, _, witness = shared
    witness.open("witness", PROSE, 1)
    witness.change("witness", 2, [Edit(0, 0, "Today: ")])
    before = wait_exact(witness, "witness", 2)
    pid = witness.welcome.pid

    def check(reply, codes):
        assert reply is None or reply["error"]["code"] in codes, reply

    # Every integer msgpack can carry, so that the daemon sees the edges (beyond ±2^53 too).
    integers = st.integers(-2**63, 2**64 - 1)
    values = st.recursive(st.none() | st.booleans() | integers | st.floats() | st.text()
                          | st.binary(), lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=8)
    methods = st.sampled_from([*wire.METHODS, "", "open ", "nonsense"])

    # A few hundred inputs per run in all (derandomized under CI); `vqedit bench chaos` sends
    # thousands.
    @settings(max_examples=200, deadline=None)
    @given(method=methods, params=values, rid=values, welcomed=st.booleans())
    def wrong_requests(method, params, rid, welcomed):
        raw = RawConnection(paths.socket)
        if welcomed:
            raw.hello()
        if method in ("shutdown", "reload"):
            method = "stats"  # valid requests that would disturb the other tests
        raw.send_bytes(wire.encode({"id": rid, "method": method, "params": params}))
        reply = raw.reply()
        assert reply is not None, "a well-framed request must get an answer"
        raw.close()

    @settings(max_examples=100, deadline=None)
    @given(payload=st.binary(max_size=64))
    def random_payloads(payload):
        raw = RawConnection(paths.socket)
        raw.hello()
        raw.send_bytes(wire.HEADER.pack(len(payload)) + payload)
        reply = raw.reply()
        assert reply is None or "error" in reply or "result" in reply
        raw.close()

    @settings(max_examples=60, deadline=None)
    @given(start=st.integers(-5, 400), end=st.integers(-5, 400), version=st.integers(-2, 5),
           uri=st.sampled_from(["mine", "unknown"]))
    def wrong_edits(start, end, version, uri):
        raw = RawConnection(paths.socket)
        raw.hello()
        raw.request("open", {"uri": "mine", "version": 3, "text": PROSE})
        reply = raw.request("change", {"uri": uri, "version": version,
                                       "edits": [{"start": start, "end": end, "text": "z"}]})
        fits = 0 <= start <= end <= len(PROSE) and version > 3 and uri == "mine"
        if not fits:
            check(reply, {wire.ErrorCode.INVALID_PARAMS, wire.ErrorCode.EDIT_OUT_OF_RANGE,
                          wire.ErrorCode.STALE_VERSION, wire.ErrorCode.UNKNOWN_DOCUMENT})
            assert reply is not None and "error" in reply
        raw.close()

    wrong_requests()
    random_payloads()
    wrong_edits()

    raw = RawConnection(paths.socket)  # a frame too large closes that connection only
    raw.send_bytes(wire.HEADER.pack(wire.MAX_FRAME + 1) + b"\x00" * 64)
    assert raw.reply()["error"]["code"] == wire.ErrorCode.FRAME_TOO_LARGE
    assert raw.reply() is None
    raw = RawConnection(paths.socket)  # so does a connection cut inside a frame
    raw.send_bytes(wire.HEADER.pack(100) + b"\x81")
    raw.close()
    raw = RawConnection(paths.socket)  # nothing before hello
    assert raw.request("stats", {})["error"]["code"] == wire.ErrorCode.NOT_INITIALIZED
    mismatch = raw.request("hello", {"protocol": 999, "client": "future"})["error"]
    assert mismatch["code"] == wire.ErrorCode.PROTOCOL_MISMATCH
    assert "vqedit daemon stop" in mismatch["message"]
    raw.close()

    assert witness.stats()["pid"] == pid, "the daemon must not have died"
    assert witness.results("witness") == before, "another document's state changed"
    witness.change("witness", 3, [Edit(0, 5, "Yesterday")])
    assert witness.wait_for("witness", 3).version == 3


def test_checkpoint_and_head_changes_on_disk_reload_and_recompute_open_documents(tmp_path):
    tiny = make_tiny_model(tmp_path)
    with private_dirs() as paths, DaemonClient(
            daemon_args=tiny.daemon_args("--compact-after-s", "60"), paths=paths) as client:
        client.open("doc", PROSE, 1)
        assert client.wait_for("doc", 1).scores.keys() == {"alpha", "beta", "gamma"}
        write_head(tiny.head, ["left", "right"], seed=1)
        wait_until(lambda: client.latest("doc").label in ("left", "right"), what="new head")
        assert client.stats()["reloads"] == 1
        old = client.latest("doc")
        shutil.copy(tiny.student, tmp_path / "copy")  # the same bytes, saved anew
        os.replace(tmp_path / "copy", tiny.student)
        wait_until(lambda: client.stats()["reloads"] == 2, what="second reload")
        assert client.wait_for("doc", 1).version == 1 and old.version == 1


def test_lru_budget_evicts_and_recomputes_then_idle_daemon_exits(tiny, expected):
    with private_dirs() as paths:
        # About one and a half documents' states (the least a budget may be: 0.114 MB).
        args = tiny.daemon_args("--memory-mb", "0.12", "--idle-exit-s", "2",
                                "--compact-after-s", "0.3")
        with DaemonClient(daemon_args=args, paths=paths) as client:
            for d in range(3):
                client.open(f"doc-{d}", PROSE, 1)
                client.wait_for(f"doc-{d}", 1)
            stats = client.stats()
            assert stats["evictions"] >= 3 and stats["resident_documents"] < 3, stats
            assert stats["state_mb"] <= stats["memory_budget_mb"]
            client.change("doc-0", 2, [Edit(0, 3, "One")])  # doc-0 was evicted
            assert_matches(wait_exact(client, "doc-0", 2), expected(client.text("doc-0")))
        assert running_pid(paths) is not None
        wait_until(lambda: running_pid(paths) is None, what="idle exit")
        assert not paths.socket.exists() and not paths.pid.exists()


def test_kill_9_then_the_client_respawns_the_daemon_and_resyncs_its_documents(tiny, expected):
    with private_dirs() as paths:
        client = DaemonClient(daemon_args=tiny.daemon_args("--compact-after-s", "0.3"),
                              paths=paths)
        client.open("a", PROSE, 1)
        client.open("b", "A second document.", 7)
        client.wait_for("b", 7)
        old = client.welcome.pid
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: running_pid(paths) is None, what="the kill")
        assert paths.socket.exists(), "a stale socket is left behind"
        client.change("a", 2, [Edit(len(PROSE), len(PROSE), "\n\nOne more paragraph.")])
        assert client.welcome.pid != old
        assert_matches(wait_exact(client, "a", 2), expected(client.text("a")))
        assert client.wait_for("b", 7).version == 7
        assert client.stats()["documents"] == 2
        client.shutdown()
        assert running_pid(paths) is None


def test_killed_after_the_last_keystroke_the_daemon_is_replaced_and_results_come_unasked(
        tiny, expected):
    """A recovering client (the language server's) reconnects when the connection closes:
    a new daemon computes every open document again, with no further call from the caller."""
    with private_dirs() as paths:
        arrived = []
        client = DaemonClient(daemon_args=tiny.daemon_args(), paths=paths, recover=True,
                              on_results=arrived.append)
        client.open("a", PROSE, 1)
        client.change("a", 2, [Edit(0, 0, "Today: ")])
        client.wait_for("a", 2)
        old = client.welcome.pid
        os.kill(old, signal.SIGKILL)
        killed = len(arrived)
        wait_until(lambda: len(arrived) > killed and arrived[-1].version == 2,
                   what="results from the new daemon")
        assert client.welcome.pid != old and running_pid(paths) == client.welcome.pid
        assert_matches(wait_exact(client, "a", 2), expected(client.text("a")))  # compacted
        client.shutdown()


def test_a_client_of_another_version_replaces_the_daemon_once(tiny):
    with private_dirs() as paths:
        with DaemonClient(daemon_args=tiny.daemon_args(), paths=paths) as current:
            old = current.welcome.pid
        newer = DaemonClient(daemon_args=tiny.daemon_args(), paths=paths, version="9.9.9")
        with pytest.raises(DaemonError, match="another version"):
            newer.connect()  # the replacement is still 0.1.0: it gives up instead of looping
        assert running_pid(paths) not in (None, old)
        assert len(newer.spawned) == 1


def test_huge_bad_values_get_short_error_replies_and_the_session_goes_on(shared):
    """A 5 MB method name or URI is quoted back as a short escaped prefix: the reply fits a
    frame, and the same connection keeps working."""
    paths, _, _ = shared
    raw = RawConnection(paths.socket)
    assert "result" in raw.request("hello", {"protocol": wire.PROTOCOL_VERSION, "client": "raw"})
    huge = "\u2028x" * 2_500_000
    for method, params, code in [(huge, {}, wire.ErrorCode.METHOD_NOT_FOUND),
                                 ("close", {"uri": huge}, wire.ErrorCode.UNKNOWN_DOCUMENT)]:
        reply = raw.request(method, params)
        assert reply["error"]["code"] == code, reply["error"]["message"][:200]
        assert len(reply["error"]["message"]) < wire.ERROR_CHARS + 10
        assert "\\u2028" in reply["error"]["message"]  # escaped, not raw
    assert "result" in raw.request("stats", {})
    raw.sock.close()


def _tcp_hello(port: int, token: object) -> dict | None:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(wire.encode({"id": 1, "method": "hello", "params": {
        "protocol": wire.PROTOCOL_VERSION, "client": "tcp", "token": token}}))
    reply = wire.decode(wire.recv_frame(sock))
    closed = wire.recv_frame(sock) is None if "error" in reply else None
    sock.close()
    return {**reply, "closed": closed}


def test_tcp_clients_without_the_token_get_unauthorized_small_frames_and_no_say_in_idle_exit(
        tiny):
    with private_dirs() as paths:
        args = tiny.daemon_args("--tcp-port", "0", "--idle-exit-s", "2")
        with DaemonClient(daemon_args=args, paths=paths) as client:
            port = client.stats()["tcp_port"]
            for token in ("wrong", "jeton-clé-ünïcode", "", None, 7, [1]):
                reply = _tcp_hello(port, token)
                assert reply["error"]["code"] == wire.ErrorCode.UNAUTHORIZED, (token, reply)
                assert reply["closed"], "a refused TCP client is disconnected"
            big = socket.create_connection(("127.0.0.1", port), timeout=30)
            big.sendall(wire.HEADER.pack(wire.PRE_AUTH_FRAME + 1) + b"\0" * 1024)
            reply = wire.decode(wire.recv_frame(big))
            assert reply["error"]["code"] == wire.ErrorCode.FRAME_TOO_LARGE
            assert wire.recv_frame(big) is None
            big.close()
            lurker = socket.create_connection(("127.0.0.1", port), timeout=30)
        # The only client left never said hello: the daemon exits when idle all the same.
        assert wait_until(lambda: running_pid(paths) is None, what="idle exit", timeout=60)
        lurker.close()


def test_loopback_tcp_needs_the_token(tiny):
    with private_dirs() as paths, DaemonClient(
            daemon_args=tiny.daemon_args("--tcp-port", "0"), paths=paths) as client:
        info = json.loads(paths.tcp.read_text())
        assert client.stats()["tcp_port"] == info["port"]
        assert oct(paths.tcp.stat().st_mode & 0o777) == "0o600"
        for token, ok in (("wrong", False), (info["token"], True)):
            sock = socket.create_connection(("127.0.0.1", info["port"]), timeout=30)
            sock.sendall(wire.encode({"id": 1, "method": "hello", "params": {
                "protocol": wire.PROTOCOL_VERSION, "client": "tcp", "token": token}}))
            reply = wire.decode(wire.recv_frame(sock))
            assert ("result" in reply) == ok, reply
            if not ok:
                assert reply["error"]["code"] == wire.ErrorCode.UNAUTHORIZED
                assert wire.recv_frame(sock) is None, "a refused TCP client is disconnected"
            sock.close()


def test_cli_start_status_stop(tiny):
    def vqedit(*args):
        return subprocess.run([sys.executable, "-m", "vqedit", "daemon", *args],
                              capture_output=True, timeout=300)

    with private_dirs() as paths:
        assert vqedit("status").returncode == 3
        started = vqedit("start", *tiny.daemon_args())
        assert started.returncode == 0, started.stderr.decode()[-2000:]
        assert str(running_pid(paths)) in started.stdout.decode()
        status = wait_until(lambda: json.loads(vqedit("status", "--json").stdout)["model"],
                            what="the model loaded")
        assert status == "tiny-bert + student.safetensors"
        assert oct(paths.socket.stat().st_mode & 0o777) == "0o600"
        assert oct(paths.runtime.stat().st_mode & 0o777) == "0o700"
        assert oct(paths.log.stat().st_mode & 0o777) == "0o600"  # it names documents
        assert oct(paths.log.parent.stat().st_mode & 0o777) == "0o700"
        assert vqedit("start", *tiny.daemon_args()).returncode == 2
        assert vqedit("stop").returncode == 0
        assert running_pid(paths) is None
        missing = vqedit("run", "--student", str(Path("/nonexistent.safetensors")))
        assert missing.returncode == 2 and b"no such file" in missing.stderr


def test_an_idle_daemon_unloads_the_model_and_reloads_it_for_the_next_edit(tiny, expected):
    with private_dirs() as paths, DaemonClient(
            daemon_args=tiny.daemon_args("--idle-unload-s", "1", "--compact-after-s", "0.3"),
            paths=paths) as client:
        client.open("doc", PROSE, 1)
        client.wait_for("doc", 1)
        wait_until(lambda: client.stats()["model"] is None, what="the idle unload")
        assert client.stats()["documents"] == 1, "texts stay open while the model is unloaded"
        client.change("doc", 2, [Edit(0, 3, "One")])
        assert_matches(wait_exact(client, "doc", 2), expected(client.text("doc")))


def _hello_as(uid: int, socket_path: Path) -> str:
    """Connect as another user (a forked child drops to `uid`) and say hello: the reply or why not.

    A fork, not a new interpreter: another user may not be able to run this one.
    """
    hello = wire.encode({"id": 1, "method": "hello",
                         "params": {"protocol": wire.PROTOCOL_VERSION, "client": "stranger"}})
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only system calls, then _exit
        outcome = b"closed"
        try:
            os.setgid(uid)
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(str(socket_path))
            sock.sendall(hello)
            if sock.recv(4):
                outcome = b"answered"
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed with our hello unread, or before it was all sent
        except OSError as e:
            outcome = f"failed: {e}".encode()
        os.write(write, outcome)
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        return f.read().decode()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another user")
def test_a_client_of_another_user_is_refused_even_when_the_socket_is_reachable(tiny):
    stranger = 65534  # nobody
    with private_dirs() as paths, DaemonClient(daemon_args=tiny.daemon_args(),
                                               paths=paths) as client:
        # Open the way the file modes normally bar, so that only the peer uid check remains.
        for path in (*paths.socket.parents, paths.socket):
            if str(path).startswith(tempfile.gettempdir() + "/"):
                path.chmod(path.stat().st_mode | 0o777)
        assert _hello_as(stranger, paths.socket) == "closed"
        assert f"uid {stranger} (not ours)" in paths.log.read_text()
        assert client.stats()["sessions"] == 1
