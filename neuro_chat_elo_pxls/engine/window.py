"""The bounded window: at most ``size`` commands of one kind queued, the rest wait in
the database. Written once for the enrichment, follow and sweep jobs.

A job asks :meth:`Window.room` how many to fetch (0 while more than half the window
is still queued, so the database is asked once per half window, not per command),
fetches that many ids (leaving out :meth:`Window.queued_ids` and its own skips), and
:meth:`Window.push`\\ es them; ``push`` says whether the window was filled, i.e. more
may wait in the database (the job's backlog).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .queue import Command, CommandQueue, Kind


@attrs.frozen
class Window:
    """At most ``size`` commands of ``kind`` queued (the part that plans them keeps the
    rest in the database); sync, changes nothing but the queue it is given."""

    kind: Kind
    size: int

    def room(self, queue: CommandQueue) -> int:
        """How many commands to add now (0 while more than half the window waits)."""
        queued = queue.count(self.kind)
        return 0 if queued > self.size // 2 else self.size - queued

    def queued_ids(self, queue: CommandQueue) -> set[int]:
        """The users with a queued command of this window's kind."""
        return queue.user_ids(self.kind)

    def push(self, queue: CommandQueue, ids: Iterable[int], room: int) -> bool:
        """Queue a command per id (at most ``room``); True if the room was filled (more
        may wait in the database)."""
        pushed = 0
        for user_id in ids:
            if pushed == room:
                break
            queue.push(Command(self.kind, user_id))  # refused if queued already
            pushed += 1
        return pushed == room
