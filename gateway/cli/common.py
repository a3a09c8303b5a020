"""What every command group shares: exit codes, JSON output and running one write action."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from gateway.core.config import Config
from gateway.runtime import Runtime

# Exit codes from sysexits.h, which MTAs understand for pipe delivery.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2, default=str)
    sys.stdout.write("\n")


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
