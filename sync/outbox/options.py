"""RocksDB options of an outbox database: WAL recycling, memtables, direct I/O.

Also used by the benchmark's bare anchor (``db_options``), so that its "physical
limit" has the same WAL, memtable and I/O settings as the outbox.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Final

from rocksdict import BlockBasedOptions, Cache, DBCompressionType, DBRecoveryMode, Options

__all__ = ["db_options", "direct_io_at", "direct_io_works", "outbox_options"]

_MEMTABLES_PER_WAL_BUDGET: Final = 8  # max_total_wal_size / write_buffer_size
_RECYCLED_WALS: Final = _MEMTABLES_PER_WAL_BUDGET * 3 // 2  # WALs live at a forced flush


def direct_io_works(directory: Path) -> bool:
    """Whether ``O_DIRECT`` writes work on the filesystem of ``directory`` (ext4, xfs and
    f2fs: yes; some tmpfs and FUSE mounts: no).  Probed with one aligned 4 KiB write,
    because RocksDB would only find out at its first flush, and fail it."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    probe = directory / f".direct-io-probe-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | flag, 0o600)
        try:
            with mmap.mmap(-1, 4096) as aligned:  # page-aligned, as O_DIRECT wants
                os.write(fd, aligned)
        finally:
            os.close(fd)
    except OSError:
        return False
    finally:
        probe.unlink(missing_ok=True)
    return True


def outbox_options(memory_budget: int, cache: Cache, *, direct_io: bool = False) -> Options:
    """Options of the database (``direct_io`` for its flushes) and of each column family."""
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    opts.set_paranoid_checks(True)
    opts.set_max_open_files(-1)  # open (and check) every table file at start
    opts.set_keep_log_file_num(2)
    opts.set_max_log_file_size(1 << 20)
    opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
    # Reuse obsolete WAL files instead of creating new ones: overwriting blocks that
    # are already allocated lets each synced write's fdatasync skip the file-size /
    # extent metadata (a journal commit on ext4), as SQLite does by reusing its WAL.
    # Recycled records carry their log number, so recovery stops at stale tails;
    # RocksDB >= 9.1 keeps recycling on under point-in-time recovery (the bundled
    # 9.8 does; it prints ``Options.recycle_log_file_num`` in the LOG). Enough files
    # are kept for every WAL still live when ``max_total_wal_size`` forces a flush.
    opts.set_recycle_log_file_num(_RECYCLED_WALS)
    # Every group also updates the class counters in ``meta``. Without atomic flush a
    # WAL file stays live until that small column family is flushed too (forced only
    # at ``max_total_wal_size``), so fewer files are free to recycle (slower synced
    # batches, docs/OUTBOX.md). Flushing all column families together frees each WAL
    # as soon as its memtables are flushed.
    opts.set_atomic_flush(True)
    opts.set_write_buffer_size(memory_budget // _MEMTABLES_PER_WAL_BUDGET)
    opts.set_max_write_buffer_number(2)
    opts.set_db_write_buffer_size(memory_budget // 2)
    opts.set_max_total_wal_size(memory_budget)
    opts.set_max_background_jobs(2)
    opts.set_compression_type(DBCompressionType.lz4())
    # Flushes and compactions write their SST files around the page cache: then the
    # WAL fsync of a group no longer waits behind the writeback of a whole memtable
    # (docs/OUTBOX.md, "Flushes around the page cache"). Reads still use the cache.
    opts.set_use_direct_io_for_flush_and_compaction(direct_io)
    table = BlockBasedOptions()
    table.set_block_cache(cache)
    opts.set_block_based_table_factory(table)
    return opts


def db_options(memory_budget: int, path: Path) -> Options:
    """The RocksDB options of an outbox database at ``path`` (also used by the
    benchmark's bare anchor, so that its "physical limit" has the same WAL, memtable
    and I/O settings)."""
    return outbox_options(memory_budget, Cache(memory_budget // 4), direct_io=direct_io_at(path))


def direct_io_at(path: Path) -> bool:
    """``direct_io_works`` for the database at ``path`` (probed in its parent while the
    database directory does not exist yet)."""
    return direct_io_works(path if path.is_dir() else path.parent)
