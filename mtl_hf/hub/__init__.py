"""The Hub side: the model card (rendered from `templates/model_card.md`), the training curves drawn for it,
and pushing a saved folder."""
