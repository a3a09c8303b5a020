"""Benchmark a fixed git ref instead of a working tree that other people are editing.

`git archive REF gateway rules templates data` is unpacked into a folder; putting that folder first
on PYTHONPATH (or sys.path) makes `import gateway` load the snapshot: the editable install's finder
sits after the normal path finder, so the snapshot wins. Nothing in .git is written.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from mailmix import REPO

PARTS = ("gateway", "rules", "templates", "data")


def export(ref: str, dest: Path) -> tuple[Path, str]:
    """Unpack REF's gateway/, rules/, templates/ and data/ into dest; return (dest, commit sha)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(REPO), "archive", "--format=tar", sha, *PARTS], stdout=subprocess.PIPE
    )
    assert archive.stdout is not None
    with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {ref} failed")
    return dest, sha


def describe_worktree() -> dict[str, object]:
    """HEAD's commit and how many gateway/rules/templates/data files differ from it right now."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *PARTS],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {"source": "worktree"}
    return {"source": "worktree", "head": sha, "changed_files": len(dirty)}
