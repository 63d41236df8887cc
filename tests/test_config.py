from __future__ import annotations

from pathlib import Path

import pytest

from proctor.config import load_settings
from proctor.errors import ConfigError


def test_defaults_put_a_sqlite_database_and_policies_under_the_home(tmp_path: Path) -> None:
    settings = load_settings({"PROCTOR_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path / 'proctor.db'}"
    assert settings.policy_dir == tmp_path / "policies"
    assert settings.is_embedded


def test_the_home_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    (tmp_path / "proctor.toml").write_text(
        'database_url = "postgresql://db/proctor"\ntrust_domain = "acme.example"\n'
    )
    settings = load_settings({"PROCTOR_HOME": str(tmp_path)})
    assert settings.database_url == "postgresql://db/proctor"
    assert settings.trust_domain == "acme.example"
    assert not settings.is_embedded
    overridden = load_settings({"PROCTOR_HOME": str(tmp_path),
                                "PROCTOR_DATABASE_URL": "sqlite:///other.db"})
    assert overridden.database_url == "sqlite:///other.db"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("database_url = ", "is not valid TOML"),
        ('colour = "blue"\n', "unknown key `colour`"),
        ("trust_domain = 3\n", "must be a string"),
        ('database_pool_size = "20"\n', "must be a whole number"),
        ("database_pool_size = 3\n", "database pool size `3` is not valid"),
        ('database_pool_timeout_seconds = "5"\n', "must be a finite number"),
        ("database_pool_timeout_seconds = nan\n", "must be a finite number"),
        ("database_pool_timeout_seconds = 0\n", "database pool timeout `0` is not valid"),
        ('database_lock_timeout_seconds = "5"\n', "must be a finite number"),
        ("database_lock_timeout_seconds = 61\n", "database lock timeout `61` is not valid"),
        ('database_url = "mysql://x"\n', "scheme `mysql` is not supported"),
    ],
)
def test_a_bad_config_file_is_a_specific_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "proctor.toml").write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings({"PROCTOR_HOME": str(tmp_path)})


def test_an_explicit_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"PROCTOR_CONFIG": str(tmp_path / "missing.toml")})


def test_the_database_pool_size_comes_from_the_file_or_the_environment(tmp_path: Path) -> None:
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_pool_size == 20
    (tmp_path / "proctor.toml").write_text("database_pool_size = 8\n")
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_pool_size == 8
    assert load_settings({"PROCTOR_HOME": str(tmp_path),
                          "PROCTOR_DATABASE_POOL_SIZE": "40"}).database_pool_size == 40


@pytest.mark.parametrize("size", ["0", "3", "1001", "ten", "2e1"])
def test_a_database_pool_size_out_of_range_is_refused_at_start(tmp_path: Path, size: str) -> None:
    with pytest.raises(ConfigError, match=f"database pool size `{size}` is not valid"):
        load_settings({"PROCTOR_HOME": str(tmp_path), "PROCTOR_DATABASE_POOL_SIZE": size})


def test_the_database_pool_timeout_comes_from_the_file_or_the_environment(
        tmp_path: Path) -> None:
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_pool_timeout_seconds == 5
    (tmp_path / "proctor.toml").write_text("database_pool_timeout_seconds = 0.5\n")
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_pool_timeout_seconds == 0.5
    assert load_settings({"PROCTOR_HOME": str(tmp_path),
                          "PROCTOR_DATABASE_POOL_TIMEOUT_SECONDS": "12"}
                         ).database_pool_timeout_seconds == 12


@pytest.mark.parametrize("seconds", ["0", "0.05", "61", "nan", "inf", "five"])
def test_a_database_pool_timeout_out_of_range_is_refused_at_start(
        tmp_path: Path, seconds: str) -> None:
    env = {"PROCTOR_HOME": str(tmp_path), "PROCTOR_DATABASE_POOL_TIMEOUT_SECONDS": seconds}
    with pytest.raises(ConfigError, match=f"database pool timeout `{seconds}` is not valid"):
        load_settings(env)


def test_the_database_lock_timeout_comes_from_the_file_or_the_environment(
        tmp_path: Path) -> None:
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_lock_timeout_seconds == 5
    (tmp_path / "proctor.toml").write_text("database_lock_timeout_seconds = 0.5\n")
    assert load_settings({"PROCTOR_HOME": str(tmp_path)}).database_lock_timeout_seconds == 0.5
    assert load_settings({"PROCTOR_HOME": str(tmp_path),
                          "PROCTOR_DATABASE_LOCK_TIMEOUT_SECONDS": "12"}
                         ).database_lock_timeout_seconds == 12


@pytest.mark.parametrize("seconds", ["0", "0.05", "61", "nan", "inf", "five"])
def test_a_database_lock_timeout_out_of_range_is_refused_at_start(
        tmp_path: Path, seconds: str) -> None:
    env = {"PROCTOR_HOME": str(tmp_path), "PROCTOR_DATABASE_LOCK_TIMEOUT_SECONDS": seconds}
    with pytest.raises(ConfigError, match=f"database lock timeout `{seconds}` is not valid"):
        load_settings(env)
