"""`python -m gateway` runs the same CLI as the `gateway` command."""

from gateway.cli import main

raise SystemExit(main())
