"""Configuration: precedence, the TOML file, and errors that name the file, source and field."""

from __future__ import annotations

import os

import pytest

from jobsync.config import CliValues, resolve_settings
from jobsync.errors import ConfigError

ENV = {"JOBSYNC_API_KEY": "k"}


def _write(tmp_path, text: str):
    path = tmp_path / "jobsync.toml"
    path.write_text(text)
    return path


def test_defaults_without_anything(tmp_path):
    settings = resolve_settings(CliValues(), {}, cwd=tmp_path)
    assert settings.database_url == "sqlite:///jobsync.db"
    assert settings.page_size == 100
    assert settings.sources == ()


def test_the_config_file_in_the_working_directory_is_found(tmp_path):
    _write(tmp_path, 'database_url = "sqlite:///x.db"\n')
    assert resolve_settings(CliValues(), {}, cwd=tmp_path).database_url == "sqlite:///x.db"


def test_many_sources_each_with_its_own_key(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("file-key\n")
    os.chmod(key_file, 0o600)
    path = _write(
        tmp_path,
        f"""
[[sources]]
cluster_id = "in01-0123456789abcdef"
api_key_env = "KEY_A"

[[sources]]
name = "analytics"
project_id = "proj-1"
region_id = "aws-us-west-2"
db_name = "default"
api_key_file = "{key_file}"

[[sources]]
name = "onprem"
kind = "milvus"
base_url = "http://127.0.0.1:19530"
""",
    )
    settings = resolve_settings(CliValues(config_file=str(path)), {"KEY_A": "a"})
    a, b, c = settings.sources
    assert (a.key, a.api_key.reveal(), a.list_body()) == (
        "in01-0123456789abcdef",
        "a",
        {"clusterId": "in01-0123456789abcdef"},
    )
    assert b.key == "analytics" and b.api_key.reveal() == "file-key"
    assert b.list_body() == {
        "projectId": "proj-1",
        "regionId": "aws-us-west-2",
        "dbName": "default",
    }
    assert (c.kind, c.key, c.api_key) == ("milvus", "onprem", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus = 1\n", "unknown field 'bogus'"),
        ("page_size = 'ten'\n", "field 'page_size' must be int"),
        ("page_size = 500\n", "out of range"),
        ("[[sources]]\ncluster_id = 5\n", "source '#1'"),
        (
            "[[sources]]\ncluster_id = 'in01-x'\ncolour = 'red'\n",
            "source 'in01-x': unknown field 'colour'",
        ),
        (
            "[[sources]]\ncluster_id = 'in01-x'\napi_key_env = 'NOPE'\n",
            "source 'in01-x': field 'api_key_env': environment variable NOPE is not set",
        ),
        ("[[sources]]\nname = 'x'\n", "needs 'cluster_id'"),
        ("[[sources]]\ncluster_id = 'in01-x'\nkind = 'mongo'\n", "field 'kind'"),
        (
            "[[sources]]\ncluster_id = 'in01-x'\nbase_url = 'http://api.example.com'\n",
            "field 'base_url'",
        ),
        (
            "[[sources]]\ncluster_id = 'a'\n[[sources]]\ncluster_id = 'a'\n",
            "two sources are named 'a'",
        ),
        (
            "[[sources]]\nname = 'prod'\ncluster_id = 'in01-a'\n"
            "[[sources]]\nname = 'prod'\ncluster_id = 'in01-b'\n",
            "two sources are named 'prod'",
        ),
        (
            "[[sources]]\nname = 'a'\ncluster_id = 'in01-x'\n"
            "[[sources]]\nname = 'b'\ncluster_id = 'in01-x'\n",
            "sources 'a' and 'b' would store their jobs under the same cluster_id 'in01-x'",
        ),
        (
            "[[sources]]\ncluster_id = 'in01-x'\n"
            "[[sources]]\nkind = 'milvus'\nname = 'in01-x'\nbase_url = 'http://127.0.0.1:1'\n",
            "two sources are named 'in01-x'",
        ),
        ("not toml [\n", "not valid TOML"),
    ],
)
def test_bad_config_names_the_file_source_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        resolve_settings(CliValues(config_file=str(path)), ENV)
    assert str(path) in str(info.value)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_an_unreadable_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve_settings(CliValues(config_file=str(tmp_path / "missing.toml")), ENV)


def test_command_line_cluster_ids_replace_the_file_sources(tmp_path):
    path = _write(tmp_path, '[[sources]]\ncluster_id = "in01-file"\n')
    settings = resolve_settings(CliValues(config_file=str(path), cluster_ids=("in01-cli",)), ENV)
    assert [s.key for s in settings.sources] == ["in01-cli"]


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:19531",
        "http://localhost:1",
        "http://[::1]:8080",
        "https://api.cloud.zilliz.com",
    ],
)
def test_accepted_base_urls(url, tmp_path):
    settings = resolve_settings(CliValues(cluster_ids=("c",), base_url=url), ENV, cwd=tmp_path)
    assert settings.sources[0].base_url == url


@pytest.mark.parametrize(
    "url",
    ["http://api.example.com", "http://10.0.0.5", "ftp://x", "https://user:pw@api.example.com"],
)
def test_refused_base_urls(url, tmp_path):
    with pytest.raises(ConfigError):
        resolve_settings(CliValues(cluster_ids=("c",), base_url=url), ENV, cwd=tmp_path)


def test_a_world_readable_key_file_is_refused(tmp_path):
    key = tmp_path / "key"
    key.write_text("secret")
    os.chmod(key, 0o644)
    with pytest.raises(ConfigError, match="readable by group or others"):
        resolve_settings(CliValues(cluster_ids=("c",), api_key_file=str(key)), {}, cwd=tmp_path)


def test_reading_commands_do_not_need_the_keys(tmp_path):
    path = _write(tmp_path, '[[sources]]\ncluster_id = "in01-x"\napi_key_env = "UNSET_KEY"\n')
    settings = resolve_settings(CliValues(config_file=str(path)), {}, need_keys=False)
    assert settings.sources[0].api_key is None
    with pytest.raises(ConfigError, match="UNSET_KEY is not set"):
        resolve_settings(CliValues(config_file=str(path)), {})


# -- requests_per_second and details_interval ----------------------------------------------------


def test_the_rate_comes_from_the_option_then_the_file_then_the_default(tmp_path):
    path = _write(
        tmp_path,
        """
requests_per_second = 50
details_interval = 90

[[sources]]
cluster_id = "a"
api_key_env = "K"
requests_per_second = 5

[[sources]]
cluster_id = "b"
api_key_env = "K"

[[sources]]
cluster_id = "c"
api_key_env = "OTHER"
requests_per_second = 1000.5
""",
    )
    env = {"K": "k", "OTHER": "o"}
    settings = resolve_settings(CliValues(config_file=str(path)), env)
    a, b, c = settings.sources
    assert settings.http.requests_per_second == 50 and settings.details_interval == 90
    # a and b share a key: the smallest rate holds for both; c has a key of its own.
    assert (settings.rate_for(a), settings.rate_for(b), settings.rate_for(c)) == (5, 5, 1000.5)

    given = resolve_settings(CliValues(config_file=str(path), requests_per_second=300.0), env)
    assert [given.rate_for(s) for s in given.sources] == [300, 300, 300]

    default = resolve_settings(CliValues(cluster_ids=("x",)), {"JOBSYNC_API_KEY": "k"})
    assert default.rate_for(default.sources[0]) == 20 and default.details_interval == 300


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "true", '"20"'])
@pytest.mark.parametrize("where", ["top", "source"])
def test_a_rate_that_is_not_a_positive_number_is_refused(tmp_path, value, where):
    line = f"requests_per_second = {value}\n"
    top = line if where == "top" else ""
    source = line if where == "source" else ""
    path = _write(tmp_path, f'{top}[[sources]]\ncluster_id = "a"\n{source}')
    with pytest.raises(ConfigError, match="requests_per_second"):
        resolve_settings(CliValues(config_file=str(path)), {"JOBSYNC_API_KEY": "k"})


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_details_interval_that_is_not_a_positive_number_is_refused(tmp_path, value):
    path = _write(tmp_path, f"details_interval = {value}\n")
    with pytest.raises(ConfigError, match="details_interval"):
        resolve_settings(CliValues(config_file=str(path)), {})


def test_a_sources_api_root_is_its_own_else_the_options_else_the_files(tmp_path):
    path = _write(
        tmp_path,
        'base_url = "http://127.0.0.1:1"\n'
        '[[sources]]\ncluster_id = "in01-a"\n'
        '[[sources]]\ncluster_id = "in01-b"\nbase_url = "http://127.0.0.1:2"\n',
    )
    found = resolve_settings(CliValues(config_file=str(path)), ENV)
    assert [s.base_url for s in found.sources] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    found = resolve_settings(CliValues(config_file=str(path), base_url="http://127.0.0.1:3"), ENV)
    assert [s.base_url for s in found.sources] == ["http://127.0.0.1:3", "http://127.0.0.1:2"]
