"""The chatbot's database of one (condition, persona) job, kept in step with ``items.jsonl``.

The job's PersonaCore is opened for one session at a time and closed after it, so between
sessions the database file is complete. Before session ``i`` starts, the file is copied to a
snapshot; the marker file records what the database holds:

- ``{"settled": null, "snapshot": i}`` before session ``i`` runs (the database may be
  half-written from here on);
- ``{"settled": i + 1, "snapshot": i}`` after session ``i`` ended and the core closed, just
  before its item is appended.

On resume with ``d`` finished items: ``settled == d`` and the last session had closed: the
database is used as it is; ``snapshot == d``: session ``d`` was interrupted (or its item was
lost), so the snapshot is restored and the session reruns from its start, never continuing
what the chatbot said before; anything else: the job's state cannot be trusted and the job
reruns from its first session.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "x"


class JobState:
    def __init__(self, root: Path, condition: str, persona_id: str) -> None:
        folder = root / "state" / safe_name(condition)
        folder.mkdir(parents=True, exist_ok=True)
        base = safe_name(persona_id)
        self.db = folder / f"{base}.db"
        self.snapshot = folder / f"{base}.snapshot.db"
        self.marker = folder / f"{base}.json"

    def _read(self) -> dict[str, int | None]:
        try:
            value = json.loads(self.marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def _write(self, settled: int | None, snapshot: int) -> None:
        """Atomically: a crash leaves the old marker or the new one, never half of one."""
        tmp = self.marker.with_suffix(".tmp")
        tmp.write_text(json.dumps({"settled": settled, "snapshot": snapshot}), encoding="utf-8")
        os.replace(tmp, self.marker)

    def prepare(self, done: int) -> tuple[int, str]:
        """Bring the database to the state after ``done`` sessions. Returns (the sessions it
        holds, what was done): ``done`` when it could, else 0 (the job reruns from scratch)."""
        marker = self._read()
        if done == 0 and not marker:
            self._wipe(self.db)
            return 0, "fresh"
        if marker.get("settled") == done:
            return done, "kept"
        if marker.get("snapshot") == done and self.snapshot.exists():
            self._wipe(self.db)
            self._copy(self.snapshot, self.db)
            log.warning("%s: the interrupted session %d is discarded and rerun", self.db, done + 1)
            return done, "restored"
        self._wipe(self.db)
        self._wipe(self.snapshot)
        self.marker.unlink(missing_ok=True)
        if done:
            log.warning(
                "%s does not match the %d finished session(s): the job reruns from its start",
                self.db,
                done,
            )
        return 0, "rebuilt" if done else "fresh"

    def before_session(self, index: int) -> None:
        """Snapshot the closed database, then mark it as possibly half-written."""
        tmp = self.snapshot.with_name(self.snapshot.name + ".tmp")
        self._wipe(tmp)
        if self.db.exists():
            self._copy(self.db, tmp)
            for suffix in SQLITE_SUFFIXES:
                src = tmp.with_name(tmp.name + suffix)
                if src.exists():
                    os.replace(src, self.snapshot.with_name(self.snapshot.name + suffix))
        else:
            self._wipe(self.snapshot)
        self._write(None, index)

    def after_session(self, index: int) -> None:
        """The core is closed and the session complete; its item comes next."""
        self._write(index + 1, index)

    @staticmethod
    def _copy(src: Path, dst: Path) -> None:
        for suffix in SQLITE_SUFFIXES:
            s = src.with_name(src.name + suffix)
            if s.exists():
                shutil.copyfile(s, dst.with_name(dst.name + suffix))

    @staticmethod
    def _wipe(path: Path) -> None:
        for suffix in SQLITE_SUFFIXES:
            path.with_name(path.name + suffix).unlink(missing_ok=True)
