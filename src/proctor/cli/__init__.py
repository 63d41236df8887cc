"""The ``proctor`` command (``proctor.cli.main:app``)."""

__all__: list[str] = []
