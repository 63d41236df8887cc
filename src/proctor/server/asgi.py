"""The application as each ``proctor serve`` worker process builds it, from the
environment (``PROCTOR_HOME``, ``PROCTOR_DATABASE_URL``, ``PROCTOR_SERVER_CONFIG``).

For uvicorn: ``uvicorn --factory proctor.server.asgi:app_from_env``.
"""

from __future__ import annotations

from fastapi import FastAPI

from proctor.cli.runtime import open_runtime
from proctor.config import load_settings
from proctor.server.app import create_app
from proctor.server.config import load_server_config

__all__ = ["app_from_env"]


def app_from_env() -> FastAPI:
    """Open the runtime of the configured home and serve it; the app closes it on exit."""
    settings = load_settings()
    config = load_server_config(settings.home)
    return create_app(open_runtime(settings), config, owns_runtime=True)
