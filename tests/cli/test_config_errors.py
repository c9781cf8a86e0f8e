"""Every configuration problem is one ``Error:`` line and exit 2, through the installed
``jobsync`` command, and never shows the key or the database password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER

JOBSYNC = str(Path(sys.executable).with_name("jobsync"))
PASSWORD = "pw-Canary0123456789"


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    return subprocess.run(
        [JOBSYNC, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *hidden: str) -> str:
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for secret in hidden:
        assert secret.lower() not in (result.stdout + result.stderr).lower()
    return result.stderr


def test_a_key_file_with_a_bom_and_crlf_works(sim, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_bytes(b"\xef\xbb\xbf" + API_KEY.encode() + b"\r\n")
    key_file.chmod(0o600)
    db = f"sqlite:///{tmp_path / 'j.db'}"

    result = run(
        "sync", "--db", db, "--base-url", sim.url, "--cluster-id", CLUSTER,
        "--api-key-file", str(key_file), cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{CLUSTER}: 50 jobs")
    help_text = " ".join(run("sync", "--help", cwd=tmp_path).stdout.split())
    assert "a UTF-8 BOM and trailing newline are ignored" in help_text


NON_ASCII_KEY = "sk-Zq7Wx3Rt9\u00a0Lm4Np8Vb"  # a no-break space pasted with the key


@pytest.mark.parametrize("where", ["JOBSYNC_API_KEY", "ZILLIZ_API_KEY", "file", "api_key_env"])
@pytest.mark.parametrize("command", ["sync", "daemon"])
def test_a_key_with_a_non_ascii_character_is_refused_at_start(where, command, tmp_path):
    env: dict[str, str] = {}
    args = ["--db", f"sqlite:///{tmp_path / 'j.db'}", "--base-url", "http://127.0.0.1:9"]
    if where == "file":
        key_file = tmp_path / "key"
        key_file.write_text(NON_ASCII_KEY + "\n", encoding="utf-8")
        key_file.chmod(0o600)
        args += ["--cluster-id", CLUSTER, "--api-key-file", str(key_file)]
    elif where == "api_key_env":
        config = tmp_path / "jobsync.toml"
        config.write_text(f'[[sources]]\ncluster_id = "{CLUSTER}"\napi_key_env = "PROD_KEY"\n')
        env["PROD_KEY"] = NON_ASCII_KEY
        args += ["--config", str(config)]
    else:
        env[where] = NON_ASCII_KEY
        args += ["--cluster-id", CLUSTER]
    if command == "daemon":
        args += ["--every", "1m"]

    result = run(command, *args, cwd=tmp_path, env=env)

    message = assert_one_error_line(result, 2, NON_ASCII_KEY[:8], NON_ASCII_KEY[-6:])
    assert "U+00A0" in message and "not ASCII" in message
    assert not (tmp_path / "j.db").exists()  # refused before anything was opened


BAD_URLS = {
    "port": (f"postgresql://u:{PASSWORD}@h:notaport/x", "the port is not a number"),
    "psycopg2": (f"postgresql+psycopg2://u:{PASSWORD}@127.0.0.1/x", "psycopg 3"),
    "sqlite with a password": (f"sqlite://:{PASSWORD}@/path", "takes no user, password or host"),
    "mysql": (f"mysql://u:{PASSWORD}@h/x", "sqlite:// and postgresql:// only"),
}


@pytest.mark.parametrize(("url", "says"), BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.parametrize(
    "command",
    [["sync", "--cluster-id", CLUSTER], ["jobs"], ["db", "upgrade"], ["db", "current"]],
    ids=lambda c: " ".join(c),
)
def test_a_bad_database_url_is_one_line_and_exit_2(url, says, command, tmp_path):
    result = run(*command, "--db", url, cwd=tmp_path, env={"JOBSYNC_API_KEY": API_KEY})

    message = assert_one_error_line(result, 2, PASSWORD)
    assert says in message and ":***@" in message


def test_the_psycopg2_message_says_what_to_write(tmp_path):
    result = run("jobs", "--db", BAD_URLS["psycopg2"][0], cwd=tmp_path)
    assert "write postgresql://" in result.stderr


@pytest.fixture
def future_db(db_url):
    """A database stamped with a revision this jobsync has never heard of."""
    engine = open_engine(db_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    return db_url


def test_db_upgrade_of_a_database_from_a_newer_jobsync_fails_in_one_line(future_db, tmp_path):
    result = run("db", "upgrade", "--db", future_db, cwd=tmp_path)

    message = assert_one_error_line(result, 1)
    assert "9999" in message and "newer jobsync" in message and "upgrade jobsync" in message
    engine = open_engine(future_db)
    with engine.connect() as conn:  # nothing was changed
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == "9999"
    engine.dispose()


def test_db_current_of_a_database_from_a_newer_jobsync_says_so(future_db, tmp_path):
    result = run("db", "current", "--db", future_db, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("9999 (unknown to this version of jobsync")
    assert "upgrade jobsync" in result.stdout and "jobsync db upgrade" not in result.stdout


@pytest.mark.parametrize("value", ["0", "-1", "nan", "abc", "inf"])
@pytest.mark.parametrize("how", ["option", "env"])
def test_a_rate_that_is_not_a_positive_number_is_one_line_and_exit_2(value, how, tmp_path):
    args = ["--requests-per-second", value] if how == "option" else []
    env = {"JOBSYNC_API_KEY": API_KEY}
    if how == "env":
        env["JOBSYNC_REQUESTS_PER_SECOND"] = value
    result = run(
        "sync", "--cluster-id", CLUSTER, "--db", "sqlite:///x.db", *args, cwd=tmp_path, env=env
    )
    assert "positive number" in assert_one_error_line(result, 2, API_KEY)
    assert not (tmp_path / "x.db").exists()
