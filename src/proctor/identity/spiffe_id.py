"""Agent ids: SPIFFE IDs of the form ``spiffe://<trust-domain>/agent/<name>``.

Parsing is the ``spiffe`` package's (:class:`spiffe.SpiffeId`); proctor adds
only the shape of an agent's path. The canonical form (the trust domain in
lower case, as the SPIFFE standard says) is what is stored and compared.

>>> parse_agent_id("spiffe://Acme.example/agent/coder")
AgentId(id='spiffe://acme.example/agent/coder', trust_domain='acme.example', name='coder')
>>> agent_id_for("coder", "acme.example").id
'spiffe://acme.example/agent/coder'
"""

from __future__ import annotations

import re
import threading
from typing import NamedTuple

from proctor.errors import IdentityError

__all__ = ["MAX_AGENT_ID_LENGTH", "MAX_NAME_LENGTH", "AgentId", "agent_id_for", "parse_agent_id"]

_LOADING = threading.Lock()
_loaded = False


def load_spiffe() -> None:
    """Import the ``spiffe`` package, once, one thread at a time. It is imported on first
    use (it loads its Workload API client, gRPC and protobuf: about 0.3 s of CPU, which
    commands that never read an agent id do without), and a new process's first
    decisions come on many threads at once: two threads importing the package and one of
    its modules each hold one module's import lock and wait for the other's, and Python
    breaks that with ``_DeadlockError`` in one of them (a decision failed so). Call it
    before any ``from spiffe ...`` inside a function."""
    global _loaded
    if _loaded:
        return
    with _LOADING:
        if not _loaded:
            import spiffe.errors
            import spiffe.spiffe_id.spiffe_id  # noqa: F401
            _loaded = True

MAX_AGENT_ID_LENGTH = 512
MAX_NAME_LENGTH = 128
_MAX_TRUST_DOMAIN_LENGTH = 255
_FORM = "spiffe://<trust-domain>/agent/<name>"
# What the SPIFFE standard allows, to the end of the text: the package's own check lets
# a line break through at the end (a pattern's `$`), which made `coder\n` an agent of its
# own beside `coder`. A trust domain's labels are never empty, so `acme.example.` (the
# same name to DNS) is not a second trust domain beside `acme.example`.
_NAME = re.compile(r"[A-Za-z0-9._-]+\Z")
_TRUST_DOMAIN = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")


class AgentId(NamedTuple):
    """A parsed, canonical agent id."""

    id: str
    trust_domain: str
    name: str


# ids parsed before: every request of an agent names it (its proof's `sub`, `iss`), and
# parsing is a pure function of the text; a failure is never kept
_PARSED: dict[str, AgentId] = {}
_MAX_PARSED = 10_000


def parse_agent_id(value: str) -> AgentId:
    """Parse ``value`` as an agent's SPIFFE ID; raise ``agent_id_invalid`` if it is not one."""
    found = _PARSED.get(value) if type(value) is str else None
    if found is not None:
        return found
    parsed = _parse(value)
    if len(_PARSED) >= _MAX_PARSED:
        _PARSED.clear()
    _PARSED[value] = parsed
    return parsed


def _parse(value: str) -> AgentId:
    if not isinstance(value, str) or not value:
        raise IdentityError("agent_id_invalid",
                            f"an agent id must be a SPIFFE ID of the form {_FORM}")
    shown = value if len(value) <= 80 else value[:77] + "..."
    if len(value) > MAX_AGENT_ID_LENGTH:
        raise IdentityError("agent_id_invalid",
                            f"agent id `{shown}` is longer than {MAX_AGENT_ID_LENGTH} characters")
    load_spiffe()  # imported on first use, by one thread (see there)
    from spiffe.errors import PySpiffeError
    from spiffe.spiffe_id.spiffe_id import SpiffeId

    try:
        spiffe_id = SpiffeId(value)
    except PySpiffeError as exc:
        # the package's message repeats the input; keep only what is wrong with it
        detail = str(exc).split("': ", 1)[-1]
        detail = detail[:1].lower() + detail[1:]
        raise IdentityError("agent_id_invalid",
                            f"agent id `{shown}` is not a valid SPIFFE ID: {detail}") from exc
    trust_domain = spiffe_id.trust_domain.name
    segments = spiffe_id.path.split("/")[1:]
    if len(segments) != 2 or segments[0] != "agent":
        raise IdentityError("agent_id_invalid", f"agent id `{shown}` is not of the form {_FORM}")
    name = segments[1]
    if not _NAME.match(name) or not _TRUST_DOMAIN.match(trust_domain):
        raise IdentityError("agent_id_invalid", f"agent id `{shown}` is not a valid SPIFFE ID: "
                            "a trust domain is dot-separated labels of lowercase letters, "
                            "digits, `-` and `_`; a name is letters, digits, `.`, `-` and `_`")
    if len(name) > MAX_NAME_LENGTH:
        raise IdentityError("agent_id_invalid",
                            f"agent name in `{shown}` is longer than {MAX_NAME_LENGTH} characters")
    if len(trust_domain) > _MAX_TRUST_DOMAIN_LENGTH:
        raise IdentityError("agent_id_invalid",
                            f"trust domain in `{shown}` is longer than 255 characters")
    return AgentId(str(spiffe_id), trust_domain, name)


def agent_id_for(name_or_id: str, trust_domain: str) -> AgentId:
    """An agent id from a full SPIFFE ID, or from a bare name in ``trust_domain``."""
    if "://" in name_or_id:
        return parse_agent_id(name_or_id)
    return parse_agent_id(f"spiffe://{trust_domain}/agent/{name_or_id}")
