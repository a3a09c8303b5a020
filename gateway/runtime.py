"""Everything a running gateway holds once: config, store, registry, rules, templates, calendar."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from functools import cached_property
from pathlib import Path

from gateway.core.config import Config
from gateway.core.workdays import WorkingCalendar
from gateway.directory.registry import Registry, RegistryError, RegistryFile
from gateway.mail.auth import TxtLookup, dns_txt
from gateway.mail.dkim_keys import keys_file_lookup
from gateway.notices.templates import Templates
from gateway.rules.engine import INTENT_FILE, Rule, load_rules
from gateway.rules.intent import Vocabulary
from gateway.store.database import Store, open_store

log = logging.getLogger("gateway")


class Runtime:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.storage)
        self.templates = Templates(config.templates_dir, config.service.timezone)
        self.registry_file = RegistryFile(config.registry.file)
        self._last_registry: Registry | None = None
        self._rules = load_rules(config.rules_dir, self.templates.events("customer"))
        # What a mail asks for is weighed with this vocabulary (rules/intent.toml), read once.
        self.vocabulary = Vocabulary.load(config.rules_dir / INTENT_FILE)
        # One lock serialises processing so a shared connection never interleaves transactions.
        self.lock = threading.RLock()
        # DNS TXT lookups for DKIM keys; auth.dkim_keys_file (tests) answers instead of DNS, in
        # every process that builds a Runtime, serve's workers included.
        keys = config.auth.dkim_keys_file
        self.txt_lookup: TxtLookup = keys_file_lookup(Path(keys)) if keys else dns_txt
        # The per-case reply-address key, once read from the store (gateway.agents).
        self.reply_key: bytes | None = None

    def registry(self) -> Registry:
        """The current registry; a broken edit on disk keeps the last good one in service."""
        try:
            self._last_registry = self.registry_file.current()
        except RegistryError as exc:
            if self._last_registry is None:
                raise
            log.error("registry not reloaded, keeping the previous one: %s", exc)
        return self._last_registry

    def rules(self) -> list[Rule]:
        return self._rules

    @cached_property
    def calendar(self) -> WorkingCalendar:
        """Working days and the configured opening hours (service.opening_hours)."""
        service = self.config.service
        return WorkingCalendar.with_opening_hours(service.timezone, service.opening_hours)

    def is_open(self, moment: datetime) -> bool:
        """Within opening hours at `moment`: the one answer rules, receipts and targets share."""
        return self.calendar.is_open(moment)

    def close(self) -> None:
        self.store.close()
