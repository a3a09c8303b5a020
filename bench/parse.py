"""Parse time per message: the bench mail mix and the reading fixtures through parse() and new_text().

Run from a checkout (PYTHONPATH=the checkout): `python bench/parse.py [--messages 2000] [--rounds 5]`.
Compare two refs by running it in each (bench/snapshot.py exports a ref); the figure is the median
of the rounds, in microseconds per message.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.mailmix import generate  # noqa: E402
from gateway.mail import quoting  # noqa: E402
from gateway.mail.message import parse  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "reading"


def _round(messages: list[bytes]) -> float:
    started = time.perf_counter()
    for raw in messages:
        msg = parse(raw)
        quoting.strip_quoted(msg.body)
    return (time.perf_counter() - started) / len(messages) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    mix = [raw for _, _, raw, _ in generate(args.messages, "parse-bench")]
    fixtures = [path.read_bytes() for path in sorted(FIXTURES.glob("*.eml"))] if FIXTURES.exists() else []
    for label, messages in (("mailmix", mix), ("reading fixtures", fixtures)):
        if not messages:
            continue
        _round(messages)  # warm-up: imports, regex compilation, caches
        figures = [_round(messages) for _ in range(args.rounds)]
        print(f"{label}: {len(messages)} messages, median {statistics.median(figures):.0f} µs/message")


if __name__ == "__main__":
    main()
