"""spooler: a file-spool export daemon for a multicam video editor."""

__version__ = "0.1.0"
