"""Where does intake time go? `gateway.pipeline.process` in-process on a mixed batch, under cProfile.

    .venv/bin/python bench/profile_pipeline.py [--messages 2000] [--top 25] [--stats OUT.pstats]

No SMTP and no relay: a temp store, the repo's registry/rules/templates, and `process` called in a
loop exactly as the SMTP worker calls it (under the runtime lock). First an unprofiled pass gives
the in-process ceiling in messages/second; then a fresh store and fresh messages are processed
under cProfile and the top functions by cumulative (and by own) time are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

import snapshot
from mailmix import REPO, generate

if TYPE_CHECKING:
    from gateway.runtime import Runtime


def make_runtime(folder: Path, source: Path = REPO) -> Runtime:
    from gateway.core.config import parse_config
    from gateway.runtime import Runtime

    data = {
        "service": {
            "address": "kontakt@service.example",
            "name": "Servicesenteret",
            "case_prefix": "SSC",
            "language": "nb",
            "timezone": "Europe/Oslo",
            "phone": "73557900",
            "receipt_limit_per_hour": 1_000_000,
        },
        "storage": {"path": str(folder / "var")},
        "registry": {"file": str(source / "data" / "contacts.toml")},
        "paths": {"rules": str(source / "rules"), "templates": str(source / "templates")},
    }
    return Runtime(parse_config(data, folder))


def run(runtime: Runtime, messages: list[tuple[str, str, bytes, str]]) -> Counter[str]:
    from gateway.pipeline.process import process
    outcomes: Counter[str] = Counter()
    for _kind, sender, raw, _mid in messages:
        with runtime.lock:
            result = process(runtime, raw, "smtp", envelope_from=sender)
        outcomes[result.outcome] += 1
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stats", help="also dump the raw pstats to this file (for snakeviz etc.)")
    parser.add_argument("--skip-baseline", action="store_true", help="only the profiled pass")
    parser.add_argument("--ref", help="profile this git ref (e.g. HEAD) instead of the live working tree")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gw-profile-") as tmp:
        root = Path(tmp)
        source = REPO
        if args.ref:
            source, sha = snapshot.export(args.ref, root / "src")
            sys.path.insert(0, str(source))  # before any `import gateway`: the snapshot wins
            print(f"code: git {args.ref} = {sha}")
        else:
            print(f"code: {snapshot.describe_worktree()}")
        registry = source / "data" / "contacts.toml"
        import gateway

        assert Path(gateway.__file__).resolve().is_relative_to(source.resolve()), gateway.__file__
        if not args.skip_baseline:
            batch = generate(args.messages, "base", seed=11, registry=registry)
            runtime = make_runtime(root / "baseline", source)
            run(runtime, batch[:20])  # warm caches (templates, holidays) outside the timing
            started = time.perf_counter()
            outcomes = run(runtime, batch[20:])
            elapsed = time.perf_counter() - started
            runtime.close()
            done = len(batch) - 20
            print(
                f"unprofiled: {done} messages in {elapsed:.2f} s = {done / elapsed:.0f} msg/s"
                f" ({1000 * elapsed / done:.2f} ms/msg) outcomes={dict(outcomes)}"
            )

        batch = generate(args.messages, "prof", seed=12, registry=registry)
        kinds = Counter(kind for kind, *_ in batch)
        runtime = make_runtime(root / "profiled", source)
        run(runtime, generate(20, "warm", seed=13, registry=registry))
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        outcomes = run(runtime, batch)
        profiler.disable()
        elapsed = time.perf_counter() - started
        runtime.close()
        print(
            f"profiled:   {len(batch)} messages in {elapsed:.2f} s = {len(batch) / elapsed:.0f} msg/s"
            f" under cProfile; outcomes={dict(outcomes)}"
        )
        print(f"mix: {dict(kinds)}\n")
        if args.stats:
            profiler.dump_stats(args.stats)
        for order, title in (("cumulative", "cumulative time"), ("tottime", "own time")):
            out = io.StringIO()
            stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order)
            stats.print_stats(args.top if order == "cumulative" else 15)
            text = out.getvalue()
            start = text.find("   ncalls")
            print(f"=== top {args.top if order == 'cumulative' else 15} by {title} ===")
            print(text[start:].rstrip() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
