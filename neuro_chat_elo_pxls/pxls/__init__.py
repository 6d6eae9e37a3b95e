"""Talking to pxls (internal): the HTTP client and the parsers of what pxls serves."""
