"""Oversight: watching what agents do and see. Today: leaked-secret detection and
redaction (the output guard), and the credential formats the audit log masks with.

>>> from proctor.oversight import OutputGuard
>>> OutputGuard().scan("token ghp_" + "a1B2" * 9).value
'token [REDACTED:github_token]'

This package imports no other part of proctor but ``proctor.errors``, so that
every part (the audit log included) can use it. See ``docs/secrets.md``.
"""

from proctor.oversight.entropy import find_random_looking, is_random_looking, shannon_entropy
from proctor.oversight.formats import (
    FORMATS,
    CredentialFormat,
    is_placeholder,
    is_secret_key,
    redact_formats,
)
from proctor.oversight.guard import MAX_DEPTH, Finding, GuardResult, OutputGuard, redaction
from proctor.oversight.tokens import unverified_issuer

__all__ = [
    "FORMATS",
    "MAX_DEPTH",
    "CredentialFormat",
    "Finding",
    "GuardResult",
    "OutputGuard",
    "find_random_looking",
    "is_placeholder",
    "is_random_looking",
    "is_secret_key",
    "redact_formats",
    "redaction",
    "shannon_entropy",
    "unverified_issuer",
]
