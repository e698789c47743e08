"""``python -m minillm ...`` runs the command line (minillm/cli.py)."""
from .cli import main

raise SystemExit(main())
