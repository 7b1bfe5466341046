"""Loss weightings, one file per method: weights from the step's task losses."""
