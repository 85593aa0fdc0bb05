"""The memory budget evicts segment states, not documents, and holds after every pass: a real
daemon process with a budget that holds the largest state of one segment and no more.

Each paragraph here is a segment of about 45 tokens, so two never fit: after each pass only the
segment edited last stays, every edit of the other document reaches an evicted segment, which
the daemon computes again from the text, and in exact mode the results must still equal a fresh
full pass in this process, version after version. A budget below one segment is refused with
an error that names the minimum.
"""

import random

from tests.daemon_harness import (
    Expected,
    assert_matches,
    private_dirs,
    wait_until,
)
from vqedit.daemon.client import DaemonClient, DaemonError
from vqedit.engine.live import largest_state_nbytes
from vqedit.text.edit import Edit

COUNCIL = ("The council voted on the new budget last night after a long debate about roads, "
           "schools, parks, buses and the cost of running the city for one more year, and the "
           "mayor said the vote was closer than anyone in the chamber had expected.")
MATCH = ("Local teams played a late match in the rain on Saturday, and the crowd stayed to the "
         "very end to cheer both sides as the score swung back and forth until the referee blew "
         "the final whistle well after nine in the evening.")
PHONE = ("A new phone was announced this week with a faster chip, a larger and brighter screen, "
         "a better camera and a battery that its maker says lasts two full days, at a price a "
         "little higher than the model before.")
RAIN = ("Rain fell all day across the north of the country, closing several roads and delaying "
        "trains, while forecasters warned that the wet and windy weather would last well into "
        "the middle of next week and perhaps beyond it.")
TEXTS = {"a": "\n\n".join([COUNCIL, MATCH, PHONE]), "b": "\n\n".join([RAIN, PHONE, MATCH])}
PARAGRAPHS = {uri: text.count("\n\n") + 1 for uri, text in TEXTS.items()}
WORDS = ["budget", "match", "phone", "rain", "city"]


def minimum_mb(expected: Expected) -> float:
    return largest_state_nbytes(expected.engine) / 2**20


def test_two_documents_edited_in_turn_under_a_one_segment_budget_stay_exact(tiny, expected):
    rng, budget = random.Random(0), minimum_mb(expected) * 1.01
    args = tiny.daemon_args("--delta", "0", "--memory-mb", str(budget),
                            "--compact-after-s", "3600")
    with private_dirs() as paths, DaemonClient(daemon_args=args, paths=paths) as client:
        for uri, text in TEXTS.items():
            client.open(uri, text, 1)
            assert_matches(client.wait_for(uri, 1), expected(text))
            assert client.stats()["state_mb"] <= budget
        stats = client.stats()
        # Every segment but b's last was dropped, b's own too: a pass keeps the budget as well.
        assert stats["evictions"] == PARAGRAPHS["a"] + PARAGRAPHS["b"] - 1
        assert stats["resident_documents"] == 1
        for version in range(2, 12):
            uri = "ab"[version % 2]
            text = client.text(uri)
            at = rng.choice([i for i, c in enumerate(text) if c == " "])
            client.change(uri, version, [Edit(at, at, " " + rng.choice(WORDS))])
            results = client.wait_for(uri, version)
            assert results.cost is not None and results.cost.macs > 0
            assert_matches(results, expected(client.text(uri)))
            stats = client.stats()
            # The segment just edited stays; the rest of both documents is evicted.
            assert stats["resident_documents"] == 1 and 0 < stats["state_mb"] <= budget, stats
        assert stats["restored"] == 10  # every edit reached an evicted segment
        assert stats["evictions"] == PARAGRAPHS["a"] + PARAGRAPHS["b"] - 1 + 10


def test_a_budget_below_one_segment_is_refused_naming_the_minimum(tiny, expected):
    args = tiny.daemon_args("--memory-mb", "0.0001")
    with private_dirs() as paths, DaemonClient(daemon_args=args, paths=paths) as client:
        client.open("a", TEXTS["a"], 1)

        def refusal() -> str | None:
            try:
                client.results("a")
            except DaemonError as e:
                return str(e)
            return None

        # The model loads on the worker; then every request for results hears why it cannot.
        error = wait_until(refusal, what="the model refused")
        minimum = f"{minimum_mb(expected):.3f} MB"
        assert "memory_mb 0.0001" in error and minimum in error and "at least" in error
        assert client.stats()["model"] is None
