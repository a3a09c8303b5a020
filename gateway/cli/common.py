"""What every command group shares: exit codes, the parser, case ids, output and progress."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import Progress

from gateway.core.config import Config
from gateway.runtime import Runtime

# Exit codes from sysexits.h, which MTAs understand for pipe delivery.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

# How a case is written by us and by people: 12, SSC#12 or [SSC#12].
_CASE_ID = re.compile(r"^\[?(?:([A-Za-z][A-Za-z0-9]*)#)?(\d+)\]?$")

Tick = Callable[[int, int], None]


class Parser(argparse.ArgumentParser):
    """argparse that exits 64 (EX_USAGE) on a usage error, as sysexits.h asks, not 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n")


class CaseId(int):
    """A case number as typed; `prefix` is checked against service.case_prefix once config is loaded."""

    prefix: str = ""


def case_id(value: str) -> CaseId:
    found = _CASE_ID.match(value.strip())
    if found is None:
        raise argparse.ArgumentTypeError(f"not a case id: {value!r} (use 12, SSC#12 or [SSC#12])")
    number = CaseId(int(found.group(2)))
    number.prefix = found.group(1) or ""
    return number


def wrong_prefixes(args: argparse.Namespace, prefix: str) -> list[str]:
    """Case ids given with another installation's prefix (a typo, or the wrong gateway)."""
    found = []
    for value in vars(args).values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, CaseId) and item.prefix and item.prefix.lower() != prefix.lower():
                found.append(f"{item.prefix}#{int(item)}")
    return found


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


def say_empty(what: str) -> None:
    """An empty list says so to a person; a script reading the pipe gets no lines at all."""
    if sys.stdout.isatty():
        print(f"no {what}")


@contextmanager
def progress(what: str) -> Iterator[Tick]:
    """A progress bar on stderr when that is a terminal; otherwise a tick that does nothing."""
    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda done, total: None
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def run_action(
    config: Config,
    action: Callable[[Any], str],
    refused: tuple[type[Exception], ...],
    missing: tuple[type[Exception], ...],
) -> int:
    """Run one write command on a fresh Runtime: print its summary; 65 when refused, 66 when not found."""
    runtime = Runtime(config)
    try:
        print(action(runtime))
    except refused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EX_DATAERR
    except missing as exc:
        print(str(exc), file=sys.stderr)
        return EX_NOINPUT
    finally:
        runtime.close()
    return EX_OK
