"""An injected secret an upstream hands back encoded is redacted all the same: through
``proctor mcp wrap`` (in process) to ``tests/gateway/leaky_upstream.py`` over HTTP,
which holds the secret the gateway injects into its headers and answers it hex-encoded
(lower and upper case), as HTML character references (hex, decimal, some characters
only), as URL-safe base64 at each offset with and without padding, split across
adjacent text items, and inside base64 media that is unpadded, URL-safe, or holds the
secret hex-encoded; as base64 wrapped at 76 columns (MIME), base64 of its hex, every
character of its base64 percent-encoded, split by a NUL or by zero-width spaces, and
split across two fields of the structured content; and each of these hiding places
in the bytes of a text file's blob or of an image's metadata. Media stays media: it
still decodes, with the secret's bytes replaced."""

from __future__ import annotations

import base64
import binascii
import html
import json
import secrets
from typing import Any

import mcp_types as types
import pytest

from proctor.audit import EventFilter, iter_events
from proctor.sealing import load_master_key
from proctor.secrets import SecretStore
from tests.conftest import sqlite_only
from tests.gateway.conftest import Deployment
from tests.gateway.in_process import listening_socket, served, url_of, wrapped
from tests.gateway.leaky_upstream import FORMS, create_server

pytestmark = pytest.mark.anyio

MARK = "[REDACTED:known_secret]"


def _decoded(data: str) -> bytes:
    """Media ``data`` as bytes, whichever base64 alphabet and padding it has."""
    padded = data + "=" * (-len(data) % 4)
    return base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)


def _media(result: types.CallToolResult) -> list[bytes | None]:
    """The bytes of each image's data and resource's blob (None: not base64)."""
    payloads = [b.data for b in result.content if isinstance(b, types.ImageContent)]
    payloads += [b.resource.blob for b in result.content
                 if isinstance(b, types.EmbeddedResource)
                 and isinstance(b.resource, types.BlobResourceContents)]
    decoded: list[bytes | None] = []
    for payload in payloads:
        try:
            decoded.append(_decoded(payload))
        except binascii.Error:
            decoded.append(None)
    return decoded


def _in_media(raw: bytes, media: bytes) -> bool:
    """Whether ``media`` shows ``raw`` to a reader: as it is, hex, base64 (or its hex),
    past NULs, line breaks and zero-width spaces, in UTF-16, or as HTML references."""
    text = media.decode("utf-8", "replace")
    readings = [media.replace(b"\x00", b""), media.replace(b"\r\n", b""),
                text.replace("\u200b", "").encode(), html.unescape(text).encode()]
    b64 = base64.b64encode(raw)
    forms = [raw, raw.hex().encode(), b64.rstrip(b"="), b64.hex().encode()]
    return any(form in reading for form in forms for reading in readings)


def _exposed(value: str, result: types.CallToolResult) -> list[str]:
    """Where ``value`` can still be read in ``result``, whatever the encoding."""
    raw = value.encode()
    found = []
    texts = [b.text for b in result.content if isinstance(b, types.TextContent)]
    joined = "".join(texts)
    if value in joined or value in html.unescape(joined):
        found.append("text")
    if raw.hex() in joined.lower():
        found.append("hex")
    for media in _media(result):
        if media is None:
            found.append("media no longer base64")
        elif _in_media(raw, media):
            found.append("media")
    for text in texts:
        for offset in range(4):
            for cut in range(4):
                chunk = text[offset:len(text) - cut] if cut else text[offset:]
                chunk = chunk.rsplit("=", 1)[-1].split(";")[0]
                try:
                    decoded = _decoded(chunk)
                except (binascii.Error, ValueError):
                    continue
                if raw in decoded:
                    found.append("base64")
    return found


@sqlite_only  # what the output guard makes of a result, alike on both backends
async def test_an_injected_secret_in_each_encoding_is_redacted(deployment: Deployment) -> None:
    value = "tok_" + secrets.token_urlsafe(24)
    store = SecretStore(deployment.runtime.store, deployment.runtime.clock,
                        load_master_key(deployment.settings.home))
    store.put("upstream-token", value, by="erin@acme.example")
    sock = listening_socket()
    results: dict[str, Any] = {}
    async with served(create_server(value).streamable_http_app(), sock):
        config = deployment.config({"upstreams": {"test": {
            "url": f"{url_of(sock)}/mcp",
            "headers": {"X-Upstream-Token": "${secret:upstream-token}"}}}})
        async with wrapped(deployment, deployment.grant(), [], config=config,
                           server="test") as client:
            for form in FORMS:
                results[form] = await client.call_tool("encoded", {"form": form})
    exposed = {form: _exposed(value, result) for form, result in results.items()}
    assert {form: where for form, where in exposed.items() if where} == {}
    unredacted = [form for form, result in results.items()
                  if MARK not in json.dumps(result.model_dump(mode="json"))
                  and MARK.encode() not in b"".join(m or b"" for m in _media(result))]
    assert unredacted == []
    for form in ("media_unpadded", "media_urlsafe", "media_hex"):
        [media] = _media(results[form])
        assert media is not None and media.startswith(b"\x89PNG"), form
    # a run of base64 or hex is redacted whole, and a reading of the bytes runs past
    # the controls between a PNG's chunks: what stays is base64, not always the image
    assert [f for f in FORMS if f.startswith(("image_", "blob_"))
            and None in _media(results[f])] == []
    # split across items: the text around the secret stays where it was
    first, second = results["split_items"].content
    assert isinstance(first, types.TextContent) and isinstance(second, types.TextContent)
    assert first.text.startswith("the token is ") and second.text.endswith(" (split)")
    events = list(iter_events(deployment.runtime.store, EventFilter(action="gateway.redact")))
    assert len(events) == len(FORMS)
    assert value not in json.dumps([e.as_json() for e in events])
