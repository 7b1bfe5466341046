"""Training: `MultiTaskTrainingArguments` and `MultiTaskTrainer`, and the parts the trainer orchestrates
(plan, callbacks, checkpoint state, loss guard, step replay, tallies, evaluation, model card)."""

from typing import TYPE_CHECKING

from ..utils.lazy import lazy_attributes

_ATTRIBUTES = {"MultiTaskTrainer": ".trainer", "MultiTaskTrainingArguments": ".arguments"}

if TYPE_CHECKING:
    from .arguments import MultiTaskTrainingArguments
    from .trainer import MultiTaskTrainer

__getattr__, __dir__ = lazy_attributes(__name__, _ATTRIBUTES)
__all__ = ["MultiTaskTrainer", "MultiTaskTrainingArguments"]
