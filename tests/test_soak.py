"""A short soak: steady SMTP, pipe (and IMAP) load on `gateway serve` with a relay that fails now and then."""

from __future__ import annotations

from bench.soak import Options, run


def test_short_soak_loses_nothing_doubles_nothing_and_memory_stays_flat() -> None:
    """Twelve seconds of mixed intake against a relay refusing every 7th DATA: every accepted message stored once, every mail delivered once, RSS flat."""
    summary = run(Options(minutes=0.2, clients=3, rate=25, pipe_every=4, sample_seconds=2, drain_timeout=60))
    print(summary.text())
    assert summary.ok, summary.problems
    assert summary.smtp_accepted > 100 and summary.pipe_accepted >= 1
    assert sum(summary.relay_failures_injected.values()) > 0
    first, last, _ = summary.rss_first_last_max_mib
    assert last < first * 1.5 + 50, summary.rss_samples_kib
