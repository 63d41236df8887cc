"""Policy files: every problem is located as file:line:column, nothing invalid loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from proctor.errors import PolicyValidationError
from proctor.policy.source import MAX_FILE_BYTES, parse_sources, read_policy_dir, split_statements

from .helpers import engine_with


def _diagnostics(sources: dict[str, str]) -> list[str]:
    engine = engine_with(None)
    with pytest.raises(PolicyValidationError) as caught:
        engine.compile(sources)
    return [str(d) for d in caught.value.diagnostics]


def test_statements_ignore_semicolons_in_strings_and_comments() -> None:
    text = 'permit (principal, action, resource) // a; comment\n when { "a;b" == "a;b" };\n'
    statements = list(split_statements(text))
    assert len(statements) == 1
    assert statements[0].line == 1


def test_a_syntax_error_names_file_line_and_column_of_the_offending_token() -> None:
    text = (
        "permit (principal, action, resource);\n"
        "\n"
        "forbid (principal,\n"
        "   action, resource) when { context.x == };\n"
    )
    assert _diagnostics({"team/bad.cedar": text}) == ["team/bad.cedar:4:42: unexpected token `}`"]


def test_every_syntax_error_of_every_file_is_reported() -> None:
    problems = _diagnostics({
        "a.cedar": "permit (principal, action, resource) when { ) };",
        "b.cedar": "permit (principal, action, resource);\nforbid (principal action, resource);",
    })
    assert [p.split(":")[0:2] for p in problems] == [["a.cedar", "1"], ["b.cedar", "2"]]


def test_a_schema_violation_names_the_policy_and_its_line() -> None:
    text = (
        "permit (principal, action, resource);\n"
        '@id("bad-attr")\n'
        'permit (principal, action == Action::"tool:git/git_log", resource)\n'
        "  when { context.args.no_such_arg == 1 };\n"
    )
    problems = _diagnostics({"p.cedar": text})
    assert len(problems) == 1
    assert problems[0].startswith("p.cedar:2:1: for policy `bad-attr`")
    assert "no_such_arg" in problems[0]


def test_an_unknown_entity_type_is_a_validation_error() -> None:
    problems = _diagnostics({"p.cedar": 'permit (principal == Robot::"r2", action, resource);'})
    assert problems[0].startswith("p.cedar:1:1:")
    assert "Robot" in problems[0]


def test_a_duplicate_policy_id_names_both_places() -> None:
    problems = _diagnostics({
        "a.cedar": '@id("same") permit (principal, action, resource);',
        "b.cedar": '\n\n@id("same") forbid (principal, action, resource);',
    })
    assert problems == ["b.cedar:3:1: duplicate policy id `same` (first at a.cedar:1)"]


def test_templates_are_refused() -> None:
    problems = _diagnostics({"t.cedar": "permit (principal == ?principal, action, resource);"})
    assert problems == ["t.cedar:1:1: policy templates are not supported"]


def test_policies_without_id_are_named_by_file_and_position() -> None:
    policies = parse_sources({"x.cedar": "permit (principal, action, resource);\n" * 2})
    assert [p.id for p in policies] == ["x.cedar#1", "x.cedar#2"]


def test_an_empty_policy_set_is_refused_because_it_would_deny_everything() -> None:
    assert _diagnostics({}) == ["<policies>:0:0: no policy files: every request would be denied"]
    assert _diagnostics({"only-comments.cedar": "// nothing here\n"}) == [
        "<policies>:0:0: no policies: every request would be denied"
    ]


def test_a_non_utf8_file_is_refused_with_its_position(tmp_path: Path) -> None:
    (tmp_path / "ok.cedar").write_text("permit (principal, action, resource);")
    (tmp_path / "latin1.cedar").write_bytes(b"// caf\xe9\npermit (principal, action, resource);")
    with pytest.raises(PolicyValidationError) as caught:
        read_policy_dir(tmp_path)
    assert [str(d) for d in caught.value.diagnostics] == [
        "latin1.cedar:1:7: file is not valid UTF-8"
    ]


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    big = tmp_path / "big.cedar"
    with big.open("w") as f:
        line = "permit (principal, action, resource);\n"
        for _ in range(10 * 1024 * 1024 // len(line) + 1):
            f.write(line)
    with pytest.raises(PolicyValidationError) as caught:
        read_policy_dir(tmp_path)
    message = str(caught.value.diagnostics[0])
    assert message.startswith("big.cedar:1:1: file is ")
    assert f"over the {MAX_FILE_BYTES} limit" in message


def test_a_missing_directory_is_reported(tmp_path: Path) -> None:
    with pytest.raises(PolicyValidationError, match="policy directory does not exist"):
        read_policy_dir(tmp_path / "nope")


def test_files_are_read_recursively_with_relative_names(tmp_path: Path) -> None:
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "a.cedar").write_text("permit (principal, action, resource);")
    (tmp_path / "notes.txt").write_text("not a policy")
    assert list(read_policy_dir(tmp_path)) == ["team/a.cedar"]


def test_a_policy_naming_a_human_other_than_in_canonical_form_is_refused() -> None:
    text = (
        'permit (principal, action, resource);\n'
        '@id("no-mallory")\n'
        'forbid (principal, action, resource) when { principal.owner == Human::"Mallory@X" };\n'
        '@id("hidden")\n'
        'forbid (principal, action, resource) when { principal.owner == Human::"m\u200bx" };\n'
    )
    assert _diagnostics({"p.cedar": text}) == [
        'p.cedar:2:1: human `Mallory@X` is not in the canonical form humans are compared in: '
        'write `Human::"mallory@x"`',
        "p.cedar:4:1: a `Human` id named here contains U+200B, an invisible, control or "
        "unassigned character",
    ]
