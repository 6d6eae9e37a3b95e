"""Small helpers (internal): time conversions and durations, text, log records."""
