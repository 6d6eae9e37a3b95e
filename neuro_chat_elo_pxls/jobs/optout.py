"""``OptOutList``: the people who asked not to be counted (DESIGN 10), as the source sees
them each tick.

The list merges the config's ``opt_out`` names, the ``opt_out_file`` (read with the
follow file's rules: a regular file under a size cap, off the event loop, the last good
list kept while it is bad, one warning) and the database's own list (``opt-out add``
from the CLI, even while the source runs). :meth:`OptOutList.apply` runs at the start
of every tick, before anything is planned: everyone newly listed is withdrawn and
erased in one transaction (:func:`~..store.optout.apply`), within the tick that first
sees them, so no request and no delta of theirs follows. Logs count people, never name
them. Sends no request; times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import datetime

import attrs

from ..settings import PxlsSettings
from ..store.writer import Store
from ..util.logs import event
from ..util.text import shown
from .follow import FollowFileError, read_follow_file, split_valid

log = logging.getLogger("neuro_chat_elo_pxls")


@attrs.define
class OptOutList:
    """See the module docstring. One per source; its state is its own."""

    settings: PxlsSettings
    #: the file's last good names (None: never read well since the start)
    _file_names: list[str] | None = None
    _file_stamp: tuple[float, int] | None = None
    _file_problem: str | None = None
    _config: list[str] | None = None  # the valid names of ``opt_out``
    _mirrored: list[str] | None = None  # the config's names as last handed to the store

    async def apply(self, store: Store, now: datetime) -> None:
        """Withdraw and erase everyone on a list not yet applied (cheap when nothing
        changed: one ``stat`` of the file and two indexed queries)."""
        names = await self._names()
        changed = names is not None and names != self._mirrored
        applied = await store.apply_opt_outs(names if changed else None, now)
        if changed:
            self._mirrored = names
        if applied.people:
            log.info(
                "opt-out: %d people withdrawn and erased (%d withdrawal deltas, %d points; "
                "%d user rows erased); nothing of theirs is counted or requested again",
                applied.people,
                applied.withdrawals,
                applied.points,
                applied.erased,
                extra=event(
                    "opt_out",
                    people=applied.people,
                    withdrawals=applied.withdrawals,
                    points=applied.points,
                    erased=applied.erased,
                ),
            )
        if applied.back_in:
            log.info(
                "opt-out: %d people are no longer listed in the config: counted again as new users",
                applied.back_in,
                extra=event("opt_in", people=applied.back_in),
            )

    async def _names(self) -> list[str] | None:
        """The config's names (``opt_out`` and the file's), or None while the file has
        never been read well (then the database keeps the config names it has: a bad
        file at start-up must not count anyone again)."""
        if self._config is None:
            self._config = self._valid(list(self.settings.opt_out), "opt_out")
        path = self.settings.opt_out_file
        if path is None:
            return self._config
        await self._read_file(path)
        if self._file_names is None:
            return None
        return [*self._config, *self._file_names]

    async def _read_file(self, path: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            self._trouble(path, exc.strerror or str(exc))
            return
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._file_stamp and self._file_problem is None:
            return
        try:
            listed = await asyncio.to_thread(read_follow_file, path)
        except (OSError, FollowFileError) as exc:
            self._trouble(path, getattr(exc, "strerror", None) or str(exc))
            return
        self._file_stamp = stamp
        self._file_names = self._valid(listed, f"opt_out_file {shown(path)}")
        self._trouble(path, None)

    def _valid(self, names: list[str], where: str) -> list[str]:
        valid, invalid, first = split_valid(names)
        if invalid:
            log.warning(
                "%s: %d invalid names skipped (first: %s)", where, invalid, ", ".join(first)
            )
        return valid

    def _trouble(self, path: str, problem: str | None) -> None:
        """Say once what is wrong with the file, and when it is good again."""
        if problem is not None and problem != self._file_problem:
            kept = len(self._file_names) if self._file_names is not None else 0
            log.warning(
                "opt_out_file %s cannot be used (%s): the last good list (%d names) stays "
                "opted out until it can",
                shown(path),
                problem,
                kept,
            )
        elif problem is None and self._file_problem is not None:
            log.info("opt_out_file %s is readable again", shown(path))
        self._file_problem = problem
