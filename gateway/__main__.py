"""`python -m gateway` runs the same CLI as the `gateway` command."""

from gateway.cli.main import main

raise SystemExit(main())
