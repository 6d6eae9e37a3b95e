"""The clocks moved to :mod:`neuro_chat_elo_pxls.clock`; re-exported here for tests."""

from ..clock import JumpClock, SimClock

__all__ = ["JumpClock", "SimClock"]
