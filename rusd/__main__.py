"""`python -m rusd` is the `rusd` command."""

from rusd.server.cli import main

main()
