"""`mtl-hf report`: one static HTML page of what a model gets right and wrong on labelled rows (`page.py` lays it
out, `figures.py` draws it; `commands/report.py` gathers the rows)."""
