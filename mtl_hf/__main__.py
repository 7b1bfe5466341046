"""`python -m mtl_hf COMMAND ...`: the `mtl-hf` command."""

from .commands.main import main

raise SystemExit(main())
