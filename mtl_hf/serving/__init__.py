"""`mtl-hf serve`: the model behind an HTTP endpoint, with dynamic batching across requests."""
