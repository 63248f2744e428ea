"""FUSOU compaction service: keeps a Parquet data lake compact."""

__version__ = "0.1.0"
