"""``aipersona db copy``: everything from one store to another (SQLite file or PostgreSQL, in
either direction), verified.

Tables go parents first, each in primary-key order, in batches; every row is written with
"insert, or replace the row with that key", so a copy that was interrupted, or one run again,
ends with the same rows, never doubled. The target must be empty or an earlier copy of this
source (every persona it holds is the source's, by id and creation time): anything else is
refused before a row is written. Afterwards both sides are read again and compared
table by table: row count and a SHA-256 over the rows in key order (``shared.row_digest``).
Stop the bot before copying: rows written during the copy may be missed (the verification
then says so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from ..errors import StorageError
from .base import Storage
from .shared import TABLES, RowDigest, table_key

Progress = Callable[[str, int, int], None]  # (table, rows done so far, rows in all)


@dataclass
class TableCopy:
    table: str
    rows: int
    source_digest: str
    target_rows: int
    target_digest: str

    @property
    def ok(self) -> bool:
        return self.rows == self.target_rows and self.source_digest == self.target_digest


async def pages(
    store: Storage, table: str, columns: list[str], batch: int
) -> AsyncIterator[list[tuple[Any, ...]]]:
    """The table's rows, a batch at a time, in key order."""
    key_at = [columns.index(k) for k in table_key(table)]
    after: tuple[Any, ...] | None = None
    while True:
        rows = await store.read_rows(table, columns, after, batch)
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        after = tuple(rows[-1][i] for i in key_at)


async def digest(store: Storage, table: str, columns: list[str], batch: int) -> RowDigest:
    result = RowDigest()
    async for page in pages(store, table, columns, batch):
        result.update(page)
    return result


async def check_target(source: Storage, target: Storage, batch: int) -> None:
    """Refuse a target that holds personas the source does not have (by id and creation
    time): writing would overwrite someone else's data."""
    columns = ["id", "created_at"]
    theirs = pages(target, "personas", columns, batch)
    ours = pages(source, "personas", columns, batch)
    known: dict[Any, Any] = {}
    async for page in theirs:
        for pid, created in page:
            while pid not in known:
                more = await anext(ours, None)
                if more is None:
                    break
                known.update(more)
            if known.get(pid) != created:
                raise StorageError(
                    f"{target.location} holds data that is not a copy of {source.location} "
                    f"(persona {pid}); copy into an empty database"
                )


async def copy_store(
    source: Storage,
    target: Storage,
    *,
    batch: int = 1000,
    progress: Progress | None = None,
) -> list[TableCopy]:
    """Copy every table of ``source`` into ``target`` (both migrated to the same version),
    then verify; returns one report per table (``ok`` says whether it matches)."""
    have, want = await source.schema_version(), await target.schema_version()
    if have != want:
        raise StorageError(
            f"{source.location} is at schema version {have} and {target.location} at {want}: "
            "run 'aipersona migrate' on the older one first"
        )
    plan = []
    for table, _ in TABLES:
        columns = await source.columns(table)
        theirs = await target.columns(table)
        if sorted(columns) != sorted(theirs):
            raise StorageError(
                f"table {table} has columns {columns} in {source.location} but {theirs} in "
                f"{target.location}"
            )
        plan.append((table, columns))
    await check_target(source, target, batch)
    for table, columns in plan:
        total, done = await source.count_rows(table), 0
        if progress is not None:
            progress(table, 0, total)
        async for rows in pages(source, table, columns, batch):
            await target.write_rows(table, columns, rows)
            done += len(rows)
            if progress is not None:
                progress(table, done, total)
    await target.after_bulk_write()
    reports = []
    for table, columns in plan:
        src = await digest(source, table, columns, batch)
        dst = await digest(target, table, columns, batch)
        reports.append(TableCopy(table, src.count, src.hexdigest(), dst.count, dst.hexdigest()))
    return reports
