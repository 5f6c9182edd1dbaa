"""portal/settings.py refuses malformed environment values by name and writes no files on import.

Each test imports the settings in a fresh interpreter with a controlled environment, as a web
process, a worker or manage.py would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 50


def import_settings(tmp_path: Path, print_names: tuple[str, ...] = (), **env: str) -> subprocess.CompletedProcess[str]:
    """`import portal.settings` with only `env` (plus PATH, and a var dir under tmp_path unless given)."""
    code = "import portal.settings as s\n" + "".join(f"print(repr(s.{name}))\n" for name in print_names)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "VIRTLAB_VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    """The ImproperlyConfigured message the failed import ended with."""
    assert proc.returncode != 0, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: "), proc.stderr
    return last


def test_a_mistyped_boolean_is_refused_naming_the_variable(tmp_path: Path) -> None:
    message = refused(import_settings(tmp_path, SECRET_KEY=KEY, DEBUG="ture"))
    assert "DEBUG='ture'" in message


def test_a_non_integer_limit_is_refused_naming_the_variable(tmp_path: Path) -> None:
    message = refused(import_settings(tmp_path, SECRET_KEY=KEY, LABS_TTL_S="abc"))
    assert "LABS_TTL_S='abc'" in message


def test_an_empty_secret_file_is_refused_naming_the_variable_and_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "secret"
    empty.write_text("\n")
    message = refused(import_settings(tmp_path, SECRET_KEY_FILE=str(empty)))
    assert f"SECRET_KEY_FILE={empty}" in message
    assert "empty" in message


def test_an_unreadable_secret_file_is_refused_naming_the_variable_and_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    message = refused(import_settings(tmp_path, SECRET_KEY_FILE=str(missing)))
    assert f"SECRET_KEY_FILE={missing}" in message


def test_importing_settings_creates_nothing_in_a_missing_var_dir(tmp_path: Path) -> None:
    var = tmp_path / "var"
    proc = import_settings(tmp_path, ("VAR_DIR",), SECRET_KEY=KEY, VIRTLAB_VAR_DIR=str(var))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(var)
    assert not var.exists()


def test_without_a_key_import_writes_none_and_says_to_run_setup(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    message = refused(import_settings(tmp_path, VIRTLAB_VAR_DIR=str(var)))
    assert "make setup" in message
    assert "SECRET_KEY" in message
    assert list(var.iterdir()) == []


def test_the_key_setup_wrote_in_the_var_dir_is_used(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir()
    (var / "secret_key").write_text(KEY + "\n")
    proc = import_settings(tmp_path, ("SECRET_KEY",), VIRTLAB_VAR_DIR=str(var))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(KEY)


def test_a_secret_file_is_read_and_stripped(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(f"  {KEY}\n")
    proc = import_settings(tmp_path, ("SECRET_KEY",), SECRET_KEY_FILE=str(secret), SECRET_KEY="ignored")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(KEY)


@pytest.mark.parametrize(
    ("spelling", "value"),
    [("1", True), ("true", True), ("Yes", True), ("ON", True), ("0", False), ("FALSE", False), ("no", False),
     ("Off", False), ("", False)],
)  # fmt: skip
def test_explicit_boolean_spellings_are_accepted(tmp_path: Path, spelling: str, value: bool) -> None:
    proc = import_settings(tmp_path, ("DEBUG",), SECRET_KEY=KEY, DEBUG=spelling)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == repr(value)


def test_integer_limits_are_read_from_the_environment(tmp_path: Path) -> None:
    names = ("LABS_TTL_S", "LABS_PROVISION_TIMEOUT_S", "LABS_MAX_VMS_PER_HOST")
    proc = import_settings(
        tmp_path, names, SECRET_KEY=KEY, LABS_TTL_S=" 600 ", LABS_PROVISION_TIMEOUT_S="42", LABS_MAX_VMS_PER_HOST="3"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["600", "42", "3"]
