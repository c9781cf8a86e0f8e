"""``jobsync report``: answers for people from the reporting views."""

from __future__ import annotations

import click

from jobsync.cli_common import JobsyncGroup


@click.group(cls=JobsyncGroup)
def report() -> None:
    """Summaries from the history: durations, failures, trends, stuck jobs, an HTML report."""
