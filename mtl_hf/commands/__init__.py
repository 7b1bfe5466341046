"""The `mtl-hf` command (`main`) and one module per subcommand: `train` (the recipe, with its pieces under
`recipe/`), `evaluate`, `predict`, `push`, `compare/`, `prepare/`. Shared: `parsing` (one-line errors, flag
hints) and `model_loading` (a model folder or Hub id)."""
