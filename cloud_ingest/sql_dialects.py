"""SQL written once for both stores' dialects: a :class:`Read` (or a
:data:`Statement`) holds neutral SQL with ``?`` placeholders, and
:func:`render` turns it into SQLite's or PostgreSQL's.  The catalog's queries
(``catalog_queries.py``) and the model tables' (``models/store_rows.py``) are
written this way, so a new query is written once and runs on both backends.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar

from cloud_ingest.catalog_rows import Row

__all__ = ["INSERTION_ORDER", "Dialect", "Read", "Statement", "first", "render"]

T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]
Statement: TypeAlias = tuple[str, tuple[Any, ...]]  # neutral SQL and its values

# stands in neutral SQL for the column that orders rows as they were inserted
INSERTION_ORDER = "<insertion order>"
_INSERTION_ORDER: dict[Dialect, str] = {"sqlite": "rowid", "postgres": "created_order"}


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """One read: neutral SQL (``?`` placeholders), its values, and its answer's shape."""

    sql: str
    params: tuple[Any, ...]
    shape: Callable[[Sequence[Row]], T]


@functools.lru_cache(maxsize=256)
def render(sql: str, dialect: Dialect) -> str:
    """``sql`` in ``dialect``: PostgreSQL numbers its placeholders (``$1, $2, ...``)."""
    sql = sql.replace(INSERTION_ORDER, _INSERTION_ORDER[dialect])
    if dialect == "sqlite":
        return sql
    parts = sql.split("?")
    return parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], start=1))


def first(shape: Callable[[Row], T]) -> Callable[[Sequence[Row]], T | None]:
    """The shape of a lookup by key: the first row shaped, or None."""
    return lambda rows: shape(rows[0]) if rows else None
