"""Example plugin: an append-only JSONL audit log of persona changes and tool calls.

Enable with ``[plugins] modules = ["aipersona.plugins.audit_log"]`` and set the file with
``[plugins.audit_log] path = "audit.jsonl"``. Each line is one event: ``persona_update``
(field, old and new value, source, evidence, session ids) or ``tool_call`` (name, error).
Tool arguments and results are not written: they may hold personal data the log should not
copy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from aipersona.core import PluginHost, hookimpl

log = logging.getLogger(__name__)


class AuditLog:
    """One core's audit log: registered on that core's plugin manager at start-up, so two
    cores in one process (say, two bots) each write their own file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps({"ts": time.time(), **event}, ensure_ascii=False, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    @hookimpl
    def aipersona_after_persona_update(self, persona: Any, changes: list[Any], source: str) -> None:
        for ch in changes:
            self.write(
                {
                    "event": "persona_update",
                    "persona_id": persona.id,
                    "field": ch.field,
                    "op": ch.op,
                    "old_value": ch.old_value,
                    "new_value": ch.new_value,
                    "version": ch.version,
                    "source": source,
                    "evidence": ch.evidence,
                    "session_ids": ch.session_ids,
                }
            )

    @hookimpl
    def aipersona_after_tool_call(self, context: Any, name: str, error: str | None) -> None:
        self.write(
            {"event": "tool_call", "persona_id": context.persona_id, "tool": name, "error": error}
        )


@hookimpl
def aipersona_startup(host: PluginHost, settings: dict[str, Any]) -> None:
    """Give this core its own log (``[plugins.audit_log] path``, default beside the DB)."""
    audit = AuditLog(Path(settings.get("path") or host.data_dir / "aipersona-audit.jsonl"))
    host.register(audit)
    log.info("audit log: %s", audit.path)
