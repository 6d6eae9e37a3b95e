"""The engine (internal): the command queue with per-key cooldowns, the one persisted
engine state, the processor's failure bookkeeping and its policy, the clock guard. It
knows no job: the tick (:mod:`..jobs.tick`) plans and runs the commands on it."""
