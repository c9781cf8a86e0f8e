"""The docs site documents every command, option and environment variable (sqlite-utils' habit),
and the README stays a short door into it."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import click
import pytest
import yaml

from jobsync.cli import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMANDS_PAGE = (DOCS / "commands.md").read_text(encoding="utf-8")
CONFIGURATION_PAGE = (DOCS / "configuration.md").read_text(encoding="utf-8")
README_MAX_LINES = 200


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{path} ")
    return found


COMMANDS = _commands(cli)


def _long_options(command: click.Command) -> list[str]:
    """Every ``--name`` a command takes, ``--no-name`` flags included; ``--help`` left out."""
    names = []
    for param in command.params:
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
            if opt.startswith("--") and opt != "--help":
                names.append(opt)
    return names


def _sections(page: str) -> dict[str, str]:
    """Each ``## `jobsync ...` `` heading's text, up to the next heading of its level or above."""
    headings = list(re.finditer(r"^(#+) `jobsync ([^`]+)`[ \t]*$", page, re.M))
    found = {}
    for match in headings:
        level = len(match[1])
        end = len(page)
        for later in re.finditer(r"^(#+) ", page[match.end() :], re.M):
            if len(later[1]) <= level:
                end = match.end() + later.start()
                break
        found[match[2]] = page[match.start() : end]
    return found


SECTIONS = _sections(COMMANDS_PAGE)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_and_option_is_in_the_commands_page(path, command):
    assert path in SECTIONS, f"docs/commands.md has no section `jobsync {path}`"
    section = SECTIONS[path]
    missing = [opt for opt in _long_options(command) if f"`{opt}" not in section]
    assert not missing, (
        f"docs/commands.md, section `jobsync {path}`, does not document: {', '.join(missing)}"
    )


def test_the_commands_page_documents_no_command_that_does_not_exist():
    assert set(SECTIONS) <= {path for path, _ in COMMANDS}, (
        f"sections for unknown commands: {sorted(set(SECTIONS) - {p for p, _ in COMMANDS})}"
    )


def test_global_options_are_in_the_commands_page():
    missing = [opt for param in cli.params for opt in param.opts if f"`{opt}`" not in COMMANDS_PAGE]
    assert not missing, f"docs/commands.md does not document the global options {missing}"


def test_every_environment_variable_is_in_the_configuration_page():
    variables = {
        name
        for _path, command in COMMANDS
        for param in command.params
        for name in ([param.envvar] if isinstance(param.envvar, str) else list(param.envvar or []))
    }
    variables |= {"JOBSYNC_API_KEY", "ZILLIZ_API_KEY"}
    missing = sorted(v for v in variables if f"`{v}`" not in CONFIGURATION_PAGE)
    assert not missing, f"docs/configuration.md does not document {missing}"


def test_every_command_has_help_with_an_example():
    for path, command in COMMANDS:
        if isinstance(command, click.Group):
            continue
        assert command.help and "Example:" in command.help, path
        assert f"jobsync {path}" in command.help.split("Example:")[1], path


# -- the README ------------------------------------------------------------------------------


def test_the_readme_is_at_most_200_lines():
    lines = len(README.splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_the_readme_keeps_the_install_and_test_commands_ci_follows():
    assert "pip install -e '.[dev]'" in README
    assert re.search(r"^\$ pytest\b", README, re.M)
    assert "jobsync demo" in README


def _slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension gives a heading (mkdocs' default)."""
    text = re.sub(r"[`*_]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(m[1]) for m in re.finditer(r"^#+ (.+?)\s*$", text, re.M)}


README_LINKS = re.findall(r"\]\(((?:docs|bench)/[^)\s]+|[A-Z]+\.md)\)", README)


def test_the_readme_links_into_the_docs():
    assert any(link.startswith("docs/") for link in README_LINKS)


@pytest.mark.parametrize("link", README_LINKS)
def test_every_readme_link_into_the_repository_points_at_a_file_that_exists(link):
    target, _, anchor = link.partition("#")
    assert (ROOT / target).is_file(), f"README.md links to {target}, which does not exist"
    if anchor:
        assert anchor in _anchors(ROOT / target), f"README.md links to {link}: no such heading"


# -- the site --------------------------------------------------------------------------------


def _nav_pages(nav: list) -> list[str]:
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_docs_page_is_in_the_site_nav_and_every_nav_entry_exists():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = _nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(nav) == on_disk
    assert config["theme"]["name"] == "material"
