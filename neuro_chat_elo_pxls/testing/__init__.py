"""A local pxls.space stand-in for tests and demos (never talks to pxls.space)."""

from ..util.clock import JumpClock, SimClock
from .pages import SimUser
from .standin import Fault, PxlsStandIn, RequestRecord, Scenario

__all__ = ["Fault", "JumpClock", "PxlsStandIn", "RequestRecord", "Scenario", "SimClock", "SimUser"]
