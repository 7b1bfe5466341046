"""Helpers with no knowledge of models or data: distributed collectives, the one device -> host copy, output
folder locks, peak memory, lazy imports, and the validation of settings."""
