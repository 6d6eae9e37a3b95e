"""The engine (internal): the command queue with per-key cooldowns, the processor loop
and its failure policy, the scheduler, the one persisted engine state, the clock guard.
It knows the jobs only through the interface it defines (see ``scheduler``)."""
