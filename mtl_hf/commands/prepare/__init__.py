"""`mtl-hf prepare`: a product catalogue whose rows point to photos -> training-ready Parquet shards, on Spark.

Modules: `command` (the command and `prepare_catalogue`), `catalogue` (the table, its tasks and their
vocabularies, on the driver), `shards` (the code that runs on the executors), `storage` (fsspec
locations), `summary` (what came in, what went out, what was dropped and why)."""

from .command import main, prepare_catalogue
from .shards import DROP_REASONS, CatalogueTask
from .summary import DROPPED_FILE, SUMMARY_FILE, format_summary

__all__ = [
    "DROPPED_FILE",
    "DROP_REASONS",
    "SUMMARY_FILE",
    "CatalogueTask",
    "format_summary",
    "main",
    "prepare_catalogue",
]
