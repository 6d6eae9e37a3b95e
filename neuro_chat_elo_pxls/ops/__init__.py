"""For operators (internal): ``status`` and its health verdict."""
