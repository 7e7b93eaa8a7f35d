"""`python -m pipelines` is the `raregan` command."""

from pipelines.cli import main

raise SystemExit(main())
