"""``Outbox``: handing the outbox table's deltas to the host, the one owner of delivery.

The rows are written by the accounting (triggers, in the same statement as the score
they belong to); this module only hands them out and removes them:

* ``drain`` (at most once): :meth:`Outbox.collect` returns the rows and deletes them
  in one transaction. When the caller is cancelled after that transaction committed,
  the rows are kept here and returned first by the next call: nothing is lost.
* ``ack`` (at least once): :meth:`Outbox.collect` returns the rows after the last
  ones handed out and keeps them; :meth:`Outbox.acknowledge` deletes exactly the
  deltas the host names that this outbox handed out (another source's seq 1 is not
  this one's), and offers again what was handed out before them and never
  acknowledged (a batch the host lost to a cancelled call); :meth:`Outbox.ack_upto`
  deletes everything up to a seq.

What was handed out (the cursor, the deltas not yet acknowledged) lives in memory for
the life of the open database: after a restart the unacknowledged rows come again,
same ``seq`` (the host de-duplicates on ``(instance, seq)``). Every method is async
and runs on the store's :class:`~.connection.Database` (serialised, shielded units);
errors are :class:`~neuro_chat_elo_pxls.errors.StoreError`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import aiosqlite

from ..models import EloDelta
from .connection import Database
from .rows import outbox_rows

log = logging.getLogger("neuro_chat_elo_pxls")


class Outbox:
    """See the module docstring. ``instance`` is written into every delta handed out."""

    def __init__(self, db: Database, instance: str = "") -> None:
        self._db = db
        self.instance = instance
        self._drained: list[EloDelta] = []  # taken by a drain whose caller was cancelled
        self._handed_out = 0  # ack: the highest seq handed out (the next peek starts after)
        self._outstanding: dict[int, EloDelta] = {}  # ack: handed out, not acknowledged
        self._empty_at = -1  # the store's commits when the outbox was last found empty

    async def collect(self, delivery: str) -> list[EloDelta]:
        """The deltas to hand out now, in ``seq`` order: drained (``"drain"``) or kept
        until acknowledged (``"ack"``). Costs no query while nothing was committed
        since the outbox was last found empty."""
        if self._db.commits == self._empty_at and not self._drained:
            return []
        if delivery == "drain":
            return await self.drain()
        commits = self._db.commits  # (a read sees at least every commit counted here)
        deltas = await self._db.read(
            lambda conn: outbox_rows(conn, self._handed_out, self.instance)
        )
        if deltas:
            self._handed_out = deltas[-1].seq
            self._outstanding.update((d.seq, d) for d in deltas)
        else:
            self._empty_at = commits
        return deltas

    async def drain(self) -> list[EloDelta]:
        """Return and delete every row, in ``seq`` order, in one transaction (what a
        cancelled call had taken comes first)."""

        async def unit(conn: aiosqlite.Connection) -> list[EloDelta]:
            rows = await outbox_rows(conn, 0, self.instance)
            if rows:
                await conn.execute("DELETE FROM outbox WHERE seq <= ?", (rows[-1].seq,))
            return rows

        def committed(rows: list[EloDelta]) -> None:
            # once committed the rows live only here, until a caller receives them
            self._drained.extend(rows)
            if not rows:  # empty as of this very commit (its own number)
                self._empty_at = self._db.commits

        await self._db.write(unit, on_commit=committed)
        rows, self._drained = self._drained, []
        return rows

    async def acknowledge(self, deltas: Sequence[Any]) -> list[int]:
        """Delete exactly the deltas of ``deltas`` this outbox handed out (equal to what
        it handed out under that seq; anything else, another plugin's or another
        source's, is skipped) and offer again, with the next :meth:`collect`, what it
        handed out before them and never saw acknowledged. Returns the seqs deleted."""
        mine = sorted(
            {d.seq for d in deltas if isinstance(d, EloDelta) and self._outstanding.get(d.seq) == d}
        )
        if not mine:
            return []
        await self._delete_seqs(mine)
        for seq in mine:
            del self._outstanding[seq]
        skipped = [seq for seq in self._outstanding if seq < mine[0]]
        if skipped:  # handed out, never stored by the host: offer them again
            self._handed_out = min(skipped) - 1
            self._empty_at = -1
            log.info(
                "%d deltas handed out before seq %d were not acknowledged: they are "
                "offered again (the host de-duplicates on (instance, seq))",
                len(skipped),
                mine[0],
            )
        return mine

    async def ack_upto(self, upto_seq: int) -> int:
        """Delete every row with ``seq <= upto_seq`` (the host stored them all).
        Returns how many."""

        async def unit(conn: aiosqlite.Connection) -> int:
            cur = await conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))
            return cur.rowcount

        deleted = await self._db.write(unit)
        for seq in [s for s in self._outstanding if s <= upto_seq]:
            del self._outstanding[seq]
        return deleted

    async def _delete_seqs(self, seqs: Sequence[int]) -> int:
        """Delete the rows of exactly ``seqs`` in one transaction, as runs of
        consecutive seqs. Returns how many."""
        runs: list[tuple[int, int]] = []
        for seq in sorted(set(seqs)):
            if runs and seq == runs[-1][1] + 1:
                runs[-1] = (runs[-1][0], seq)
            else:
                runs.append((seq, seq))

        async def unit(conn: aiosqlite.Connection) -> int:
            deleted = 0
            for low, high in runs:
                cur = await conn.execute(
                    "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (low, high)
                )
                deleted += cur.rowcount
            return deleted

        return await self._db.write(unit)
