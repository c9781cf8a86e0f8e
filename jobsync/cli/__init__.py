"""The ``jobsync`` command line: parse, make one library call, print.

The ``jobsync.cli`` modules are the only code that reads the environment (through click's
``envvar=``) and configures logging; ``cli.common.JobsyncGroup`` is the one place where
jobsync's errors become ``Error: ...`` lines and exit codes. ``db`` lives in ``cli.db``, ``sync``
and ``daemon`` in ``cli.sync``, ``status``, ``jobs`` and ``history`` in ``cli.read``, ``report``
in ``cli.report``, ``simulate`` and ``demo`` in ``cli.demo``, ``notify`` in ``cli.notify``.
"""

from __future__ import annotations

import logging

import click

from jobsync._version import __version__
from jobsync.cli import db, demo, notify, read, report, sync
from jobsync.cli.common import JobsyncGroup, configure_logging, own_process

log = logging.getLogger("jobsync")


@click.group(cls=JobsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobsync")
@click.option("--debug", is_flag=True, help="Log every request and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Keep a durable, queryable history of Zilliz Cloud and Milvus import jobs."""
    ctx.obj = {"debug": debug}
    configure_logging(debug, quiet=True)


def main() -> None:
    """The ``jobsync`` console script: the command owns its process."""
    own_process()
    cli(prog_name="jobsync")


cli.add_command(db.db)
cli.add_command(notify.notify)
cli.add_command(sync.sync)
cli.add_command(sync.daemon)
cli.add_command(read.status)
cli.add_command(read.jobs)
cli.add_command(read.history)
cli.add_command(report.report)
cli.add_command(demo.simulate)
cli.add_command(demo.demo)
