"""`python -m lightyard.cli`: the same as the `lightyard` console script."""

from lightyard.cli import main

main()
