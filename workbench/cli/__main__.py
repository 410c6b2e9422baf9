"""`python -m workbench.cli ...`: the `workbench` command (what the CLI re-executes itself as, what a sweep's
worker processes and `accelerate launch -m workbench.cli train` run)."""

from workbench.cli import main

raise SystemExit(main())
