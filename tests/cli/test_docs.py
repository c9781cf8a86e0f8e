"""The README documents every command and every option (sqlite-utils' habit)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from jobsync.cli import cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} ")
    return found


COMMANDS = _commands(cli)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_and_option_is_in_the_readme(path, command):
    assert f"jobsync {path}" in README, f"`jobsync {path}` is not documented"
    for param in command.params:
        for opt in getattr(param, "opts", []):
            if opt.startswith("--") and opt != "--help":
                assert f"`{opt}" in README, f"{opt} of `jobsync {path}` is not documented"


def test_global_options_are_in_the_readme():
    for param in cli.params:
        for opt in param.opts:
            assert opt in README


def test_every_command_has_help_with_an_example():
    for path, command in COMMANDS:
        if isinstance(command, click.Group):
            continue
        assert command.help and "Example:" in command.help, path
        assert f"jobsync {path}" in command.help.split("Example:")[1], path
