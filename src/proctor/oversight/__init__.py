"""Oversight: watching what agents do and see: leaked-secret detection and redaction in
what upstreams return (the output guard), with the credential formats of
:mod:`proctor.credentials` (re-exported here), and the MCP servers configured on a
machine (:func:`discover`).

>>> from proctor.oversight import OutputGuard
>>> OutputGuard().scan("token ghp_" + "a1B2" * 9).value
'token [REDACTED:github_token]'

Oversight watches; it never decides. See ``docs/secrets.md``.
"""

from proctor.credentials.entropy import find_random_looking, is_random_looking, shannon_entropy
from proctor.credentials.formats import (
    FORMATS,
    CredentialFormat,
    is_placeholder,
    is_secret_key,
    redact_formats,
)
from proctor.oversight.clients import CLIENTS, Client
from proctor.oversight.discovery import (
    DiscoveredServer,
    Discovery,
    PlaintextSecret,
    ScanProblem,
    discover,
)
from proctor.oversight.guard import MAX_DEPTH, Finding, GuardResult, OutputGuard, redaction
from proctor.oversight.tokens import unverified_issuer

__all__ = [
    "CLIENTS",
    "FORMATS",
    "MAX_DEPTH",
    "Client",
    "CredentialFormat",
    "DiscoveredServer",
    "Discovery",
    "Finding",
    "GuardResult",
    "OutputGuard",
    "PlaintextSecret",
    "ScanProblem",
    "discover",
    "find_random_looking",
    "is_placeholder",
    "is_random_looking",
    "is_secret_key",
    "redact_formats",
    "redaction",
    "shannon_entropy",
    "unverified_issuer",
]
