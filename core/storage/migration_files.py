"""Migrations, per dialect: ``migrations/<dialect>/NNNN_name.sql`` in ``aipersona.migrations``.

Both dialects have the same numbers and names and record them in the same
``schema_migrations`` table, so a database can be copied from one to the other and checked
the same way: ``check_applied`` refuses a database of another program or one migrated by a
newer aipersona, before anything is written to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from ..errors import DatabaseTooNew, MigrationError, NotAnAipersonaDatabase

_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def bundled_migrations(dialect: str) -> list[Migration]:
    """The dialect's shipped migrations, in order."""
    out = []
    for entry in resources.files("aipersona.migrations").joinpath(dialect).iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate {dialect} migration numbers: {versions}")
    return out


def check_applied(
    where: str,
    tables: set[str],
    applied: dict[int, str] | None,
    known: list[Migration],
) -> None:
    """Refuse a store that is not aipersona's or is newer than ``known``.

    ``tables``: the store's table names; ``applied``: its ``schema_migrations`` rows (None
    when that table is not aipersona's shape).
    """
    if not tables:
        return  # new and empty
    if "schema_migrations" not in tables:
        raise NotAnAipersonaDatabase(
            f"{where} is not an aipersona database (a database of another program: it has no "
            "schema_migrations table)"
        )
    if applied is None:
        raise NotAnAipersonaDatabase(
            f"{where} is not an aipersona database (its schema_migrations table is not aipersona's)"
        )
    names = {m.version: m.name for m in known}
    newest = max(applied, default=0)
    if newest > max(names, default=0):
        raise DatabaseTooNew(
            f"{where} is at schema version {newest}, newer than this aipersona (which knows "
            f"up to {max(names, default=0)}); upgrade aipersona to use it"
        )
    for version, name in applied.items():
        if names.get(version) != name:
            raise NotAnAipersonaDatabase(
                f"{where} is not an aipersona database (migration {version} is {name!r}, "
                "not aipersona's)"
            )
