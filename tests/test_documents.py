"""Documents from outside are read with a size cap and a depth cap: deeply nested JSON,
YAML and TOML, and YAML alias bombs, are one specific error, never a RecursionError,
and every file loader refuses them with its own error, in one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from proctor.approvals.webhook import load_webhook_config
from proctor.audit.retention import verify_archive
from proctor.cli.main import app
from proctor.config import load_settings
from proctor.documents import MAX_DEPTH, check_json_text, parse_json, parse_toml, parse_yaml
from proctor.errors import (
    AuditError,
    ConfigError,
    DocumentError,
    IdentityError,
    PolicyTestError,
    ProctorError,
)
from proctor.gateway import load_gateway_config
from proctor.gateway.launch import load_agent_key
from proctor.identity import load_trust_config
from proctor.identity.jwks import read_jwks
from proctor.identity.manifest import load_manifest
from proctor.policy import load_catalog
from proctor.policy.cases import load_cases
from proctor.policy.entities import load_principals
from proctor.server.config import load_server_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "policies"
DEEP_JSON = "[" * 6000 + "]" * 6000  # a 12 KB line: far past the decoder's recursion
DEEP_YAML = "a: " + "[" * 6000 + "]" * 6000
DEEP_BLOCK_YAML = "".join(f"{'  ' * i}k:\n" for i in range(400)) + "  " * 400 + "k: 1\n"
DEEP_TOML = "a = " + "[" * 3000 + "]" * 3000
# Ten aliases of ten aliases of ...: a few hundred bytes that stand for 10^9 strings.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
    for i in range(8))

runner = CliRunner()


@pytest.mark.parametrize(("parse", "text"), [
    (parse_json, DEEP_JSON), (parse_yaml, DEEP_YAML), (parse_yaml, DEEP_BLOCK_YAML),
    (parse_toml, DEEP_TOML)], ids=["json", "yaml-flow", "yaml-block", "toml"])
def test_a_deeply_nested_document_is_too_deep_not_a_recursion_error(
        parse: Callable[..., Any], text: str) -> None:
    with pytest.raises(DocumentError) as refused:
        parse(text, what="the document")
    assert refused.value.code == "document_too_deep"
    assert refused.value.message == f"the document nests deeper than {MAX_DEPTH} levels"


def test_nesting_up_to_the_cap_is_read_and_brackets_inside_strings_do_not_count() -> None:
    at_cap = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_json(at_cap, what="x") == json.loads(at_cap)
    assert parse_yaml(at_cap, what="x") == json.loads(at_cap)
    with pytest.raises(DocumentError):
        parse_json("[" + at_cap + "]", what="x")
    quoted = json.dumps({"text": "[{" * 5000, "escaped": '\\"[[[' * 100})
    assert parse_json(quoted.encode(), what="x")["text"] == "[{" * 5000


def test_a_yaml_alias_is_refused_so_a_small_file_cannot_stand_for_a_huge_one() -> None:
    assert len(ALIAS_BOMB) < 500
    with pytest.raises(DocumentError) as refused:
        parse_yaml(ALIAS_BOMB, what="the bundle")
    assert refused.value.code == "document_alias_refused"
    assert refused.value.message == ("the bundle uses a YAML alias (line 2); aliases are not "
                                     "allowed")


def test_a_document_over_its_size_cap_is_refused_before_it_is_parsed() -> None:
    for parse in (parse_json, parse_yaml, parse_toml):
        with pytest.raises(DocumentError) as refused:
            parse(b"a = 1" + b" " * 100, what="the file", max_bytes=100)
        assert (refused.value.code, refused.value.message) == (
            "document_too_large", "the file is larger than 100 bytes")


@pytest.mark.parametrize(("parse", "text", "says"), [
    (parse_json, b'{"a": 1', "the file is not valid JSON: Expecting ',' delimiter"),
    (parse_json, '[1]'.encode("utf-16"), "the file is not UTF-8"),
    (parse_json, b"9" * 5000, "the file is not valid JSON: Exceeds the limit"),
    (parse_yaml, b"a: [1\nb: {", "the file is not valid YAML: "),
    (parse_yaml, b"a: !!python/object:os.system x", "could not determine a constructor"),
    (parse_yaml, b"\xff", "the file is not UTF-8"),
    (parse_toml, b"= broken", "the file is not valid TOML: Invalid statement")])
def test_a_malformed_document_is_one_line_naming_what_is_wrong(
        parse: Callable[..., Any], text: bytes, says: str) -> None:
    with pytest.raises(DocumentError) as refused:
        parse(text, what="the file")
    assert refused.value.code == "document_malformed"
    assert says in refused.value.message
    assert "\n" not in refused.value.message


@pytest.mark.parametrize("text", ["a: \ud800\n", "\udcff: 1", "a: 'x\x00'\n", "\x07"],
                         ids=["lone surrogate", "escaped byte", "NUL", "control"])
def test_yaml_text_that_is_not_unicode_text_is_malformed_not_an_uncaught_error(
        text: str) -> None:
    """Text (a command-line argument holds undecodable bytes as lone surrogates) that no
    YAML reader accepts is ``document_malformed``, not the reader's own exception."""
    with pytest.raises(DocumentError) as refused:
        parse_yaml(text, what="scope")
    assert refused.value.code == "document_malformed"
    assert "\n" not in refused.value.message


def _toml(loader: Callable[[Path, dict[str, str]], object], var: str
          ) -> Callable[[Path], object]:
    return lambda path: loader(path.parent, {var: str(path)})


# Each file loader, the file it reads, the error it raises, and whether it reads YAML.
LOADERS: list[tuple[str, Callable[[Path], object], str, type[ProctorError], str]] = [
    ("gateway config", load_gateway_config, "gateway.yaml", ConfigError, "yaml"),
    ("manifest", load_manifest, "manifest.yaml", IdentityError, "yaml"),
    ("tool catalog", load_catalog, "tools.yaml", ConfigError, "yaml"),
    ("entities", load_principals, "entities.yaml", ConfigError, "yaml"),
    ("policy test cases", load_cases, "deep.test.yaml", PolicyTestError, "yaml"),
    ("policy test cases (JSON)", load_cases, "deep.test.json", PolicyTestError, "json"),
    ("key set", read_jwks, "keys.jwks", ConfigError, "json"),
    ("agent key", load_agent_key, "agent.jwk", IdentityError, "json"),
    ("audit segment", lambda p: verify_archive(p, {}), "segment.jsonl", AuditError, "json"),
    ("proctor config", lambda p: load_settings({"PROCTOR_CONFIG": str(p)}), "proctor.toml",
     ConfigError, "toml"),
    ("server config", _toml(load_server_config, "PROCTOR_SERVER_CONFIG"), "server.toml",
     ConfigError, "toml"),
    ("identity config", lambda p: load_trust_config(
        p.parent, "acme.example", env={"PROCTOR_IDENTITY_CONFIG": str(p)}), "identity.toml",
     ConfigError, "toml"),
    ("webhook config", _toml(load_webhook_config, "PROCTOR_WEBHOOK_CONFIG"), "webhook.toml",
     ConfigError, "toml"),
]
DEEP = {"yaml": DEEP_YAML, "json": '{"a":' * 1500 + "1" + "}" * 1500, "toml": DEEP_TOML}


@pytest.mark.parametrize(("loader", "name", "error", "kind"), [row[1:] for row in LOADERS],
                         ids=[row[0] for row in LOADERS])
def test_every_file_loader_refuses_a_deeply_nested_file_with_its_own_error(
        tmp_path: Path, loader: Callable[[Path], object], name: str,
        error: type[ProctorError], kind: str) -> None:
    path = tmp_path / name
    path.write_text(DEEP[kind])
    with pytest.raises(error) as refused:
        loader(path)
    if name != "agent.jwk":  # the agent key's message names the key file only
        assert "nests deeper than" in refused.value.message
    assert "\n" not in refused.value.message
    if kind == "yaml":
        path.write_text(ALIAS_BOMB)
        with pytest.raises(error, match="aliases are not allowed"):
            loader(path)


def test_the_cli_reports_a_nested_policy_test_file_or_an_alias_bomb_in_one_line(
        tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES, policies)
    (policies / "deep.test.yaml").write_text(DEEP_YAML)
    result = runner.invoke(app, ["policy", "test", str(policies)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: test file `deep.test.yaml` nests deeper than {MAX_DEPTH} levels")
    (policies / "deep.test.yaml").unlink()
    (policies / "tools.yaml").write_text(ALIAS_BOMB)
    result = runner.invoke(app, ["policy", "validate", str(policies)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"error: tool catalog `{policies / 'tools.yaml'}` uses a "
                                     "YAML alias (line 2); aliases are not allowed")


@pytest.mark.parametrize("text", [b'{"a": "\\ud800"}', b'{"\\uDFFF": 1}',
                                  b'["x", ["\\udbff\\u0041"]]', '{"a": "\ud800"}'])
def test_json_holding_a_lone_surrogate_is_malformed(text: bytes | str) -> None:
    with pytest.raises(DocumentError) as caught:
        check_json_text(text, what="the body")
    assert caught.value.code == "document_malformed" and "lone surrogate" in caught.value.message


@pytest.mark.parametrize("text", [b'{"a": "\\ud83d\\ude00"}', b'{"a": "\\\\ud800"}', '{"a": "é"}'])
def test_json_escaping_a_surrogate_pair_or_a_backslash_is_text(text: bytes | str) -> None:
    check_json_text(text, what="the body")


@pytest.mark.parametrize(("text", "key", "line"), [
    ("a: 1\nb: 2\na: 3\n", "a", 3),
    ("x:\n  y: 1\n  y: 1\n", "y", 3),  # the same value twice too: keys are unique
    ('{"to": "me@acme.example", "to": "them@elsewhere.example"}', "to", 1),
    ("1: a\ntrue: b\n", "True", 2),  # 1 and true are one key once read
])
def test_a_yaml_key_given_twice_is_refused(text: str, key: str, line: int) -> None:
    # PyYAML kept the last: a reviewer reading the first could be shown another value
    with pytest.raises(DocumentError) as caught:
        parse_yaml(text, what="the bundle")
    assert caught.value.code == "document_malformed"
    assert caught.value.message == (f"the bundle gives the key `{key}` twice (line {line}); "
                                    "keys must be unique")


def test_a_merge_key_may_be_overridden_as_yaml_says() -> None:
    assert parse_yaml("<<: {a: 1, b: 2}\na: 3\n", what="the bundle") == {"a": 3, "b": 2}


@pytest.mark.parametrize(("text", "key"), [
    ('{"to": "me@acme.example", "to": "them@elsewhere.example"}', "to"),
    ('{"a": {"b": 1, "b": 1}}', "b"),  # the same value twice, nested: keys are unique
    ('[{"x": 1}, {"y": 1, "y": 2}]', "y"),
    ('{"\\u0061": 1, "a": 2}', "a"),  # one key once read, however it is escaped
])
def test_a_json_key_given_twice_in_one_object_is_refused(text: str, key: str) -> None:
    # json keeps the last; a reader that keeps the first would see another value
    with pytest.raises(DocumentError) as caught:
        parse_json(text, what="the message")
    assert caught.value.code == "document_malformed"
    assert caught.value.message == (f"the message gives the key `{key}` twice in one "
                                    "object; keys must be unique")


def test_the_same_key_in_two_objects_is_not_a_repeat() -> None:
    assert parse_json('[{"a": 1}, {"a": 2}, {"b": {"a": 3}}]', what="the message") == [
        {"a": 1}, {"a": 2}, {"b": {"a": 3}}]


def test_a_key_given_twice_is_named_in_text_any_answer_can_carry() -> None:
    """A lone surrogate as the repeated key: the refusal's text named it as it was, and
    no HTTP answer or audit event could encode it (a 500 for a token's header)."""
    with pytest.raises(DocumentError) as refused:
        parse_json(b'{"\\ud800": 1, "\\ud800": 2}', what="the header")
    assert refused.value.code == "document_malformed"
    assert "`\\ud800`" in refused.value.message
    refused.value.message.encode("utf-8")
