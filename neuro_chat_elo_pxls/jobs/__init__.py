"""The jobs (internal): one module per kind of work (pull and confirm, sweep,
enrichment, follow, profile reads, pending observations), each the only writer of its
own state."""
