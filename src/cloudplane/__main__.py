"""`python -m cloudplane` runs the CLI."""

from cloudplane.cli import main

main()
