"""How well the gateway understands what a mail asks for, on the labelled set in tests/intent_set.

Usage: PYTHONPATH=. python bench/intent.py [FILE.jsonl]

Every mail goes through prepare() and the shipped rules as a contact of the mail's role from
data/contacts.toml would send it: unauthenticated in opening hours (the worst case for a
Teknisk ansvarlig), then authenticated, then outside opening hours (on-call alerts). Prints
accuracy per category and overall, the confusion matrix, the costly errors and how many total
outages became critical, for the whole set and for the fifth held out while tuning.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from gateway.core.config import load_config
from gateway.runtime import Runtime
from tests.intent_set import evaluate
from tests.support import write_config


def main(argv: list[str]) -> int:
    records = evaluate.load(Path(argv[0])) if argv else evaluate.load()
    tuned, held_out = evaluate.holdout(records)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(load_config(write_config(Path(tmp))))
        try:
            for title, chosen in (
                ("dev set", records),
                ("tuned on (4/5)", tuned),
                ("held out (1/5)", held_out),
            ):
                print(
                    evaluate.render(evaluate.run(runtime, chosen, False, True), f"{title}, unauthenticated")
                )
                print()
            for title, auth, open_hours in (("authenticated", True, True), ("outside hours", False, False)):
                report = evaluate.run(runtime, records, auth, open_hours)
                right, total = report.accuracy()
                crit, outages = report.outages()
                print(
                    f"dev set, {title}: {right}/{total} right; costly errors: {len(report.costly())};"
                    f" outages critical: {crit}/{outages}"
                )
        finally:
            runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
