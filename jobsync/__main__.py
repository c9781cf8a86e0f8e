"""`python -m jobsync`: the same as the `jobsync` command."""

from jobsync.cli import main

main()
