"""Settings, loaded once at start and passed down.

Sources, later ones winning: built-in defaults, the TOML file
(``$PROCTOR_CONFIG``, else ``$PROCTOR_HOME/proctor.toml`` when it exists), then
environment variables ``PROCTOR_*``. ``PROCTOR_OPERATOR`` (who runs the CLI) is read
from the environment only: the file belongs to the deployment, a name to a person.

>>> s = load_settings(env={"PROCTOR_HOME": "/tmp/p"})
>>> s.database_url
'sqlite:////tmp/p/proctor.db'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proctor.documents import read_toml
from proctor.errors import ConfigError

__all__ = ["DEFAULT_POOL_SIZE", "DELEGATOR_MAX_RISK", "LOCK_TIMEOUT_SECONDS", "MAX_POOL_SIZE",
           "MIN_POOL_SIZE", "POOL_TIMEOUT_SECONDS", "Settings", "config_number",
           "config_whole_number", "load_settings"]

_DEFAULT_HOME = ".proctor"

# The most database connections one process holds (see proctor.store.pool). The audit
# writer and the revocation listener each keep one, the fast read path at least one:
# below the minimum, transactions would have none left.
DEFAULT_POOL_SIZE = 20
MIN_POOL_SIZE = 4
MAX_POOL_SIZE = 1000
# The longest a caller waits for a free connection before store_unavailable (a deny on
# the decision path), and its bounds
POOL_TIMEOUT_SECONDS = 5.0
# The longest one statement waits for a lock another connection holds (SQLite's
# busy_timeout, PostgreSQL's lock_timeout) before it fails: a row held by a human's long
# transaction or a stuck session is a store_unavailable (a deny), never a hang
LOCK_TIMEOUT_SECONDS = 5.0
# The risk score from which an agent lends nothing it handed on (the setting
# ``delegator_max_risk``): the example policies deny an agent everything from 80 on.
DELEGATOR_MAX_RISK = 80
_TIMEOUT_RANGE = (0.1, 60.0)  # both timeouts


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything proctor reads from its environment."""

    home: Path
    database_url: str
    policy_dir: Path
    trust_domain: str = "proctor.local"
    # the longest a task may live, and go without a call, before it ends by itself
    task_max_seconds: int = 8 * 3600
    task_idle_seconds: int = 30 * 60
    database_pool_size: int = DEFAULT_POOL_SIZE
    database_pool_timeout_seconds: float = POOL_TIMEOUT_SECONDS
    database_lock_timeout_seconds: float = LOCK_TIMEOUT_SECONDS
    operator: str | None = None  # PROCTOR_OPERATOR: the human the CLI acts as by default
    # the `aud` of this deployment's grants, and the one audience its checks accept
    grant_audience: str = "proctor"
    # the risk score from which an agent lends nothing it handed on: the grants delegated
    # from it are refused at each use (101: never)
    delegator_max_risk: int = DELEGATOR_MAX_RISK

    @property
    def is_embedded(self) -> bool:
        """True on the embedded default (a SQLite file), false on a shared database."""
        return self.database_url.startswith("sqlite")


_ENV_KEYS = {
    "PROCTOR_DATABASE_URL": "database_url",
    "PROCTOR_POLICY_DIR": "policy_dir",
    "PROCTOR_TRUST_DOMAIN": "trust_domain",
    "PROCTOR_TASK_MAX_SECONDS": "task_max_seconds",
    "PROCTOR_TASK_IDLE_SECONDS": "task_idle_seconds",
    "PROCTOR_DATABASE_POOL_SIZE": "database_pool_size",
    "PROCTOR_DATABASE_POOL_TIMEOUT_SECONDS": "database_pool_timeout_seconds",
    "PROCTOR_DATABASE_LOCK_TIMEOUT_SECONDS": "database_lock_timeout_seconds",
    "PROCTOR_GRANT_AUDIENCE": "grant_audience",
    "PROCTOR_DELEGATOR_MAX_RISK": "delegator_max_risk",
}
_WHOLE_NUMBERS = {"task_max_seconds", "task_idle_seconds", "database_pool_size",
                  "delegator_max_risk"}
_NUMBERS = {"database_pool_timeout_seconds", "database_lock_timeout_seconds"}
_FILE_KEYS = {"database_url", "policy_dir", "trust_domain", "grant_audience", *_WHOLE_NUMBERS,
              *_NUMBERS}


def load_settings(
    env: Mapping[str, str] | None = None, *, config_file: Path | None = None
) -> Settings:
    """Read settings from ``env`` (``os.environ`` by default) and the config file."""
    if env is None:
        import os

        env = os.environ
    home = Path(env.get("PROCTOR_HOME") or _DEFAULT_HOME).absolute()
    values: dict[str, Any] = {}
    path = config_file or (Path(env["PROCTOR_CONFIG"]) if env.get("PROCTOR_CONFIG") else None)
    if path is None and (home / "proctor.toml").is_file():
        path = home / "proctor.toml"
    if path is not None:
        values.update(_read_file(path))
    for var, key in _ENV_KEYS.items():
        if env.get(var):
            values[key] = env[var]
    settings = Settings(
        home=home,
        database_url=str(values.pop("database_url", f"sqlite:///{home / 'proctor.db'}")),
        policy_dir=Path(values.pop("policy_dir", home / "policies")),
        trust_domain=str(values.pop("trust_domain", "proctor.local")),
        task_max_seconds=_seconds(values, "task_max_seconds", 8 * 3600),
        task_idle_seconds=_seconds(values, "task_idle_seconds", 30 * 60),
        database_pool_size=_pool_size(values.pop("database_pool_size", DEFAULT_POOL_SIZE)),
        database_pool_timeout_seconds=_timeout(
            values.pop("database_pool_timeout_seconds", POOL_TIMEOUT_SECONDS), "pool"),
        database_lock_timeout_seconds=_timeout(
            values.pop("database_lock_timeout_seconds", LOCK_TIMEOUT_SECONDS), "lock"),
        operator=env.get("PROCTOR_OPERATOR") or None,
        grant_audience=str(values.pop("grant_audience", "proctor")),
        delegator_max_risk=_risk_limit(values.pop("delegator_max_risk", DELEGATOR_MAX_RISK)),
    )
    _check(settings)
    return settings


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file `{path}` does not exist")
    data = read_toml(path, what="config file", error=ConfigError)
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(f"config file `{path}` has unknown key `{unknown[0]}`")
    for key, value in data.items():
        if key in _WHOLE_NUMBERS:
            config_whole_number(value, key, f"config file `{path}`")
        elif key in _NUMBERS:
            config_number(value, key, f"config file `{path}`")
        elif not isinstance(value, str):
            raise ConfigError(f"config key `{key}` in `{path}` must be a string")
    return data


def config_whole_number(value: object, key: str, where: str) -> int:
    """``value``, read from ``where`` for ``key``, if it is a whole number (an int, not a
    bool, nor a float such as ``1.9`` or ``inf``); else a :class:`ConfigError` naming both."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: `{key}` must be a whole number")
    return value


def config_number(value: object, key: str, where: str) -> float:
    """``value``, read from ``where`` for ``key``, if it is a finite number; else a
    :class:`ConfigError` naming both. TOML and YAML both read ``nan`` and ``inf`` as
    numbers, and every comparison with NaN is false: a ``value <= 0`` check passes it."""
    if not isinstance(value, int | float) or isinstance(value, bool) \
            or not math.isfinite(value):
        raise ConfigError(f"{where}: `{key}` must be a finite number")
    return float(value)


def _seconds(values: dict[str, Any], key: str, default: int) -> int:
    """A duration setting: a whole number of seconds, between a minute and a week."""
    raw = values.pop(key, default)
    try:
        seconds = int(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"`{key}` must be a whole number of seconds, not `{raw}`") from exc
    if not 60 <= seconds <= 7 * 24 * 3600:
        raise ConfigError(f"`{key}` must be between 60 and 604800 seconds")
    return seconds


def _risk_limit(value: object) -> int:
    """The risk score from which a delegator lends nothing: 0 to 101 (101: never)."""
    text = str(value).strip()
    limit = int(text) if text.isascii() and text.isdigit() else -1
    if not 0 <= limit <= 101:
        raise ConfigError(f"delegator max risk `{value}` is not valid (a whole number from "
                          "0 to 101; 101 never refuses)")
    return limit


def _pool_size(value: object) -> int:
    """The most database connections one process holds (see :mod:`proctor.store.pool`)."""
    text = str(value).strip()
    size = int(text) if text.isascii() and text.isdigit() else 0
    if not MIN_POOL_SIZE <= size <= MAX_POOL_SIZE:
        raise ConfigError(f"database pool size `{value}` is not valid (a whole number "
                          f"from {MIN_POOL_SIZE} to {MAX_POOL_SIZE})")
    return size


def _timeout(value: object, what: str) -> float:
    """How long a caller waits for a free database connection (``pool``), or a statement
    for another connection's lock (``lock``), in seconds."""
    low, high = _TIMEOUT_RANGE
    try:
        seconds = float(str(value).strip())
    except ValueError:
        seconds = 0.0
    if not low <= seconds <= high:  # also refuses nan
        raise ConfigError(f"database {what} timeout `{value}` is not valid (seconds, from "
                          f"{low:g} to {high:g})")
    return seconds


def _check(settings: Settings) -> None:
    scheme = settings.database_url.split(":", 1)[0]
    if scheme not in {"sqlite", "postgresql", "postgresql+psycopg"}:
        raise ConfigError(
            f"database url scheme `{scheme}` is not supported (use sqlite or postgresql)"
        )
    if not settings.trust_domain or "/" in settings.trust_domain:
        raise ConfigError(f"trust domain `{settings.trust_domain}` is not valid")
    audience = settings.grant_audience
    if not 0 < len(audience) <= 256 or not audience.isprintable() or audience != audience.strip():
        raise ConfigError(f"grant audience `{audience[:80]}` is not valid (1 to 256 printable "
                          "characters, no surrounding space)")
