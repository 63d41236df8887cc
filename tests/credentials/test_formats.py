"""The one table of credential formats: what it finds, what it leaves, and that it is linear."""

from __future__ import annotations

import secrets
import string

import pytest

from proctor.audit import mask_text
from proctor.credentials import FORMATS, is_placeholder, redact_formats
from proctor.oversight import OutputGuard

_ALNUM = string.ascii_letters + string.digits


def _random(length: int, alphabet: str = _ALNUM) -> str:
    """Made at run time, so that no credential-shaped string is kept in the repository."""
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _samples() -> dict[str, tuple[str, str]]:
    """One realistic sample per kind, and the part of it that is secret."""
    pem_body = _random(64, _ALNUM + "+/")
    aws, github, gitlab = _random(16, string.ascii_uppercase + string.digits), _random(36), \
        _random(20)
    slack, stripe, openai = _random(12), _random(24), _random(28)
    google, npm, pypi = _random(35), _random(36), _random(60)
    return {
        "private_key": (f"-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n"
                        "-----END RSA PRIVATE KEY-----", pem_body),
        "bearer": ("Authorization: Bearer 9f8e7d6c5b4a.abc-def_ghi", "9f8e7d6c5b4a"),
        "basic": ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
        "jwt": ("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJl",
                "eyJzdWIiOiJhZ2VudCJ9"),
        "url_password": ("postgresql://app:hunter2@db.internal:5432/prod", "hunter2"),
        "aws_access_key": (f"AKIA{aws}", aws),
        "github_token": (f"ghp_{github}", github[:20]),
        "gitlab_token": (f"glpat-{gitlab}", gitlab),
        "slack_token": (f"xoxb-2048-1234567890-{slack}", f"1234567890-{slack}"),
        "stripe_key": (f"sk_live_{stripe}", stripe),
        "api_key": (f"sk-proj-{openai}", openai),
        "google_api_key": (f"AIza{google}", google),
        "npm_token": (f"npm_{npm}", npm[:20]),
        "pypi_token": (f"pypi-AgEIcHlwaS5vcmc{pypi}", pypi),
        "credential_pair": ("DB_PASSWORD=Tr0ub4dor&3", "Tr0ub4dor&3"),
    }


SAMPLES = _samples()


def test_every_format_has_a_sample() -> None:
    assert {form.kind for form in FORMATS} == set(SAMPLES)


# named by kind: the samples are random, and parallel workers must collect the same ids
@pytest.mark.parametrize(("kind", "sample", "secret"),
                         [(kind, *pair) for kind, pair in sorted(SAMPLES.items())],
                         ids=sorted(SAMPLES))
def test_each_format_is_found_inside_text_by_the_audit_log_and_the_guard_alike(
        kind: str, sample: str, secret: str) -> None:
    text = f"before {sample} after"
    masked, kinds = redact_formats(text, lambda k: f"<{k}>")
    assert kinds == [kind]
    assert masked.startswith("before ") and masked.endswith(" after")
    audited = mask_text(text)
    guarded = OutputGuard(detect_high_entropy=False).scan(text)
    assert f"[masked:{kind}]" in audited
    assert guarded.value == audited.replace("[masked:", "[REDACTED:")
    assert secret not in masked and secret not in guarded.value


@pytest.mark.parametrize("text", [
    '{"password": "correct horse battery staple"}',
    "password: 'hunter2!'",
    "export GITHUB_TOKEN=t0k3n-value",
    "X-Api-Key: abcd1234efgh",
    "client_secret = q8Zr2",
    "accessToken=Zq8rZq8rZq8r",
])
def test_values_of_keys_that_name_secrets_are_redacted(text: str) -> None:
    masked, kinds = redact_formats(text, lambda k: f"<{k}>")
    assert kinds == ["credential_pair"], masked
    assert "<credential_pair>" in masked


@pytest.mark.parametrize("text", [
    "The build passed in 42 seconds; 3 tests were skipped.",
    "token = self._codec.encode(claims)",
    "token=token",
    "api_key = os.environ.get('API_KEY')",
    "password: null",
    "password=${DB_PASSWORD}",
    "password: <your-password>",
    'token: "[masked]"',
    "tokens_used: 1500",
    "keyboard: us",
    "pip install sk-learn-contrib-tools",
    "mailto:alice@acme.example",
    "https://github.com/modelcontextprotocol/python-sdk/blob/main/README.md",
    "commit 3f0c2b1e9d8a7f6e5d4c3b2a1f0e9d8c7b6a5f4e",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_formats(text, lambda k: f"<{k}>") == (text, [])


@pytest.mark.parametrize("value", ["null", "***", "<token>", "${TOKEN}", "$TOKEN", "[masked]",
                                   "[REDACTED:jwt]", "  "])
def test_placeholders_are_not_secrets(value: str) -> None:
    assert is_placeholder(value)


@pytest.mark.parametrize("value", ["hunter2", "$ecret!", "Tr0ub4dor&3"])
def test_real_values_are_not_placeholders(value: str) -> None:
    assert not is_placeholder(value)


# Inputs built to make a careless pattern backtrack or rescan: 100-400 KB each. The
# patterns audit masking had before this table took minutes on the first two (they were
# quadratic); linear ones take milliseconds. The test asserts only that the scan ends.
PATHOLOGICAL = [
    "-eyJ" * 100_000,                              # JWT starts inside one long run
    "a." * 200_000 + "@",                           # URL scheme starts at every word
    "x://" + "a:" * 50_000,                          # user-info without an `@`
    "sk-" * 40_000,                                 # API-key starts inside one run
    "ghp_" * 30_000,
    "Bearer " + " " * 100_000,                       # a scheme and no credential
    "password=" * 15_000,                           # pairs that chain
    "a" * 100_000 + "password",                      # a key far too long
    "-----BEGIN PRIVATE KEY-----" * 5_000,           # blocks that never end
    ('"token": "' + "x" * 600) * 200,                # quoted values that never close
    "Ab1" * 40_000,                                  # one huge random-looking run
    "Ab1 " * 30_000,                                 # many short runs
    "eyJ" + "a" * 100_000 + ".",
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=[t[:12] for t in PATHOLOGICAL])
def test_pathological_inputs_are_scanned_to_the_end(text: str) -> None:
    masked, _ = redact_formats(text, lambda k: f"<{k}>")
    assert isinstance(masked, str)
    assert isinstance(OutputGuard().scan({"content": [{"type": "text", "text": text}]}).value,
                      dict)
