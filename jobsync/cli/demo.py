"""``jobsync simulate`` and ``jobsync demo``: the simulator and the one-command tour."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from jobsync.cli.common import F
from jobsync.config import split_ids


def _jobs_option(default: int, *, at_least: int, help: str) -> Callable[[F], F]:
    """``--jobs``: how many jobs the simulator starts each cluster with."""
    return click.option(
        "--jobs",
        "jobs_per_cluster",
        default=default,
        show_default=True,
        type=click.IntRange(min=at_least),
        help=help,
    )


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=19531,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port (0: any free port).",
)
@_jobs_option(200, at_least=0, help="Initial jobs per cluster.")
@click.option(
    "--cluster-id",
    "cluster_ids",
    multiple=True,
    help="Simulated cluster (repeatable) [default: in01-0123456789abcdef].",
)
@click.option(
    "--api-key",
    default="test-key",
    show_default=True,
    help="The key the simulator accepts (a test value, not a real key).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Seconds between simulated progress steps.",
)
def simulate(
    host: str,
    port: int,
    jobs_per_cluster: int,
    cluster_ids: Sequence[str],
    api_key: str,
    seed: int,
    interval: float,
) -> None:
    """Serve a local simulated Zilliz import-job API whose jobs keep progressing.

    Example: jobsync simulate --port 19531 --jobs 500
    """
    from jobsync.service.demo import serve_simulator

    serve_simulator(
        host=host,
        port=port,
        jobs=jobs_per_cluster,
        cluster_ids=tuple(split_ids(cluster_ids)) or ("in01-0123456789abcdef",),
        api_key=api_key,
        seed=seed,
        interval=interval,
        announce=click.echo,
    )


@click.command()
@click.option(
    "--db-file",
    default="jobsync-demo.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="SQLite file to (re)create.",
)
@_jobs_option(300, at_least=1, help="Simulated jobs per cluster at the start.")
@click.option(
    "--days",
    default=14,
    show_default=True,
    type=click.IntRange(min=1),
    help="Days of history to simulate, up to now.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    help="Sync passes to run, evenly spread over the days [default: 6 a day].",
)
def demo(db_file: str, jobs_per_cluster: int, days: int, rounds: int | None) -> None:
    """Simulate an API through two weeks of history, sync it into a local SQLite file, and
    print a summary. Simulated time: it takes seconds.

    Example: jobsync demo
    """
    from jobsync.reporting.tour import tour_report
    from jobsync.service.demo import run_demo

    click.echo(
        run_demo(
            db_file,
            report=tour_report,
            jobs=jobs_per_cluster,
            rounds=rounds,
            days=days,
            progress=click.echo,
        )
    )
