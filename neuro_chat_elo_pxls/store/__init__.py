"""The SQLite store (internal): schema and migrations, row types, reads, writes, the
handle that opens and closes it, and the lock file.

:class:`Store` (``writer``) is the one writer; :class:`StoreReader` (``reader``) opens a
database read-only for ``status`` and ``export``.
"""

from .handle import StoreHandle
from .reader import StoreReader
from .writer import Store

__all__ = ["Store", "StoreHandle", "StoreReader"]
