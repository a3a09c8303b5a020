"""Shared fixtures: a recording relay, a configured gateway, and a running `gateway serve`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.config import Config, load_config
from gateway.ops.server import Server
from gateway.runtime import Runtime
from tests.support import RecordingRelay, write_config


@pytest.fixture
def relay() -> Iterator[RecordingRelay]:
    recorder = RecordingRelay().start()
    yield recorder
    recorder.stop()


@pytest.fixture
def config_path(tmp_path: Path, relay: RecordingRelay) -> Path:
    return write_config(tmp_path, relay_port=relay.port)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load_config(config_path)


@pytest.fixture
def runtime(config: Config) -> Iterator[Runtime]:
    rt = Runtime(config)
    yield rt
    rt.close()


@pytest.fixture
def server(config: Config) -> Iterator[Server]:
    """`gateway serve` in-process: the real listener and outbox worker on loopback ports."""
    srv = Server(config)
    srv.start()
    yield srv
    srv.stop()
