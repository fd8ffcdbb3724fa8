"""`python -m quantship` is the `quantship` command."""

from quantship.cli import main

main()
