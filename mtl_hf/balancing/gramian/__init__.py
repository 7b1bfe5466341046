"""Gramian weightings, one file per method: weights from the K x K Gramian of the per-task gradients."""
