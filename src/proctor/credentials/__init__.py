"""Recognising credentials in text: well-known formats, and random-looking strings.

The audit log masks with it, the output guard redacts with it, the secret store
checks values with it. It imports no other part of proctor, so that every part can
use it. See ``docs/secrets.md``.

>>> from proctor.credentials import redact_formats
>>> redact_formats("token ghp_" + "a1B2" * 9)[0]
'token [REDACTED:github_token]'
"""

from proctor.credentials.entropy import find_random_looking, is_random_looking, shannon_entropy
from proctor.credentials.formats import (
    FORMATS,
    JWT,
    CredentialFormat,
    is_placeholder,
    is_secret_key,
    redact_formats,
)

__all__ = [
    "FORMATS",
    "JWT",
    "CredentialFormat",
    "find_random_looking",
    "is_placeholder",
    "is_random_looking",
    "is_secret_key",
    "redact_formats",
    "shannon_entropy",
]
