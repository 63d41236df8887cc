"""The decision bench's workload: one tool catalog (100 tools on 10 servers), its
principals, policies of ten kinds per tool and five global ones, and seeded requests.

Everything is drawn from one ``random.Random``, so a seed gives the same workload.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from proctor.policy import (
    DecisionRequest,
    EntityRef,
    Sensitivity,
    ToolCatalog,
    ToolSpec,
    call_context,
)

SERVERS = ("fs", "git", "db", "mail", "crm", "http", "docs", "chat", "ci", "billing")
VERBS = ("read", "write", "list", "search", "delete", "create", "update", "export", "share",
         "admin")
GROUPS = ("engineering", "finance", "support", "ops", "security", "contractors")
TAGS = ("pii", "finance", "public", "internal", "customer", "legal")
PURPOSES = ("triage", "release", "audit", "support-ticket", "report")
INPUT_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string"},
        "limit": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "recursive": {"type": "boolean"},
        "target": {"type": "string"},
    },
    "required": ["path", "limit", "tags"],
}
BASE_TIME = datetime(2026, 11, 30, tzinfo=UTC)


def build_catalog(rng: random.Random) -> ToolCatalog:
    """Every verb on every server, each tool at a drawn sensitivity."""
    levels = list(Sensitivity)
    return ToolCatalog(
        ToolSpec(server, verb, sensitivity=rng.choice(levels), input_schema=INPUT_SCHEMA)
        for server in SERVERS
        for verb in VERBS
    )


def build_principals(rng: random.Random) -> dict[str, Any]:
    """Six groups, 20 humans and 50 agents (mostly trusted), as principals files hold them."""
    humans = [{"id": f"h{i:02}", "groups": rng.sample(GROUPS, 1)} for i in range(20)]
    agents = [
        {
            "id": f"spiffe://acme.example/agent/a{i:02}",
            "owner": rng.choice(humans)["id"],
            "groups": rng.sample(GROUPS, rng.randint(1, 2)),
            "trust_state": "trusted" if rng.random() < 0.9 else "drifted",
            "risk_score": rng.randint(0, 100),
        }
        for i in range(50)
    ]
    return {"groups": [{"id": g} for g in GROUPS], "humans": humans, "agents": agents}


def tool_policy(rng: random.Random, tool: ToolSpec, index: int, kind: int) -> str:
    """A policy of the given ``kind`` scoped to ``tool``, its ``index``-th."""
    action = f'Action::"{tool.action_id}"'
    resource = f'Tool::"{tool.tool_id}"'
    group = rng.choice(GROUPS)
    head = f'@id("{tool.tool_id}#{index}")\n'
    kinds = [
        f"permit(principal in Group::\"{group}\", action == {action}, resource)\n"
        f"when {{ context.args.limit <= {rng.randint(10, 1000)} && "
        f"resource.sensitivity_level <= {rng.randint(1, 3)} }};",
        f"permit(principal, action == {action}, resource == {resource})\n"
        f"when {{ principal.risk_score < {rng.randint(20, 80)} && "
        f'context.args.path like "/srv/{group}/*" }};',
        f'@reason("contractors may not recurse")\nforbid(principal in Group::"contractors", '
        f"action == {action}, resource)\nwhen {{ context.args has recursive && "
        "context.args.recursive };",
        f'@reason("no production targets")\nforbid(principal, action in Action::"call", '
        f"resource == {resource})\n"
        'when { context.args has target && '
        'context.args.target like "*.prod.*" };',
        f'@approval("personal data needs a human")\npermit(principal in Group::"{group}", '
        f"action == {action}, resource)\nwhen {{ resource.sensitivity_level >= 2 && "
        f'context.args.tags.contains("{rng.choice(TAGS)}") }};',
        f'@reason("outside working hours")\nforbid(principal, action == {action}, resource)\n'
        f"unless {{ context.time.hour >= {rng.randint(5, 9)} && "
        f"context.time.hour < {rng.randint(17, 23)} }};",
        f"permit(principal, action == {action}, resource)\n"
        f'when {{ principal.owner in Group::"{group}" && '
        f'context.purpose == "{rng.choice(PURPOSES)}" }};',
        f'@reason("delegated too deep for this data")\nforbid(principal, action == {action}, '
        f"resource)\nwhen {{ context.delegation.depth > {rng.randint(1, 2)} && "
        f"resource.sensitivity_level >= {rng.randint(1, 3)} }};",
        f'permit(principal in Group::"{group}", action == {action}, resource == {resource})\n'
        f'when {{ context.args.tags.containsAny(["{rng.choice(TAGS)}", "{rng.choice(TAGS)}"]) '
        f"&& context.args.limit < {rng.randint(50, 500)} }};",
        f'@reason("risky agent touching secrets")\nforbid(principal, action == {action}, '
        f"resource)\nwhen {{ principal.risk_score > {rng.randint(60, 95)} && "
        'context.args.path like "*secret*" };',
    ]
    return head + kinds[kind % len(kinds)]


def global_policy(rng: random.Random, index: int) -> str:
    """A policy on every tool (``action in Action::"call"``); these sit in every slice."""
    head = f'@id("global#{index}")\n'
    kinds = [
        '@reason("agent is not trusted")\nforbid(principal, action in Action::"call", resource)\n'
        'unless { principal.trust_state == "trusted" };',
        '@reason("delegation chain too long")\nforbid(principal, action in Action::"call", '
        f"resource)\nwhen {{ context.delegation.depth > {rng.randint(2, 4)} }};",
        '@reason("contractors stay off this server")\nforbid(principal in Group::"contractors", '
        f'action in Action::"call", resource in Server::"{rng.choice(SERVERS)}");',
        'permit(principal in Group::"ops", action in Action::"call", resource)\n'
        f"when {{ resource.sensitivity_level <= 1 && context.time.hour >= {rng.randint(6, 9)} }};",
        '@reason("restricted data needs approval")\nforbid(principal, action in Action::"call", '
        "resource)\nwhen { resource.sensitivity_level == 3 && !context.approved && "
        f"principal.risk_score > {rng.randint(30, 70)} }};",
    ]
    return head + kinds[index % len(kinds)]


def policy_sources(
    rng: random.Random, tools: Sequence[ToolSpec], count: int, global_count: int
) -> dict[str, str]:
    """``count`` policies as files: ``global.cedar``, then one file per tool."""
    per_tool: dict[str, list[str]] = {t.tool_id: [] for t in tools}
    for i in range(count - global_count):
        tool, index = tools[i % len(tools)], i // len(tools)
        # every tool gets different kinds, however many tools there are
        per_tool[tool.tool_id].append(tool_policy(rng, tool, index, kind=index + i))
    sources = {"global.cedar": "\n\n".join(global_policy(rng, i) for i in range(global_count))}
    for tool_id, texts in per_tool.items():
        if texts:
            sources[f"{tool_id}.cedar"] = "\n\n".join(texts) + "\n"
    return sources


def build_requests(
    rng: random.Random, principals: dict[str, Any], tools: Sequence[ToolSpec], count: int
) -> list[DecisionRequest]:
    """``count`` tool calls by the agents on ``tools``, with drawn arguments and context."""
    agents = [a["id"] for a in principals["agents"]]
    requests = []
    for _ in range(count):
        tool = rng.choice(tools)
        args: dict[str, Any] = {
            "path": f"/srv/{rng.choice(GROUPS)}/{rng.choice(['notes', 'secret-keys', 'q3'])}",
            "limit": rng.randint(1, 1200),
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
        }
        if rng.random() < 0.3:
            args["recursive"] = rng.random() < 0.5
        if rng.random() < 0.3:
            args["target"] = rng.choice(["db.prod.acme", "db.staging.acme"])
        depth = rng.choice([0, 0, 0, 1, 2, 3, 4])
        context = call_context(
            now=BASE_TIME + timedelta(hours=call_hour(rng)),
            args=args,
            purpose=rng.choice(PURPOSES),
            delegation_chain=[rng.choice(agents) for _ in range(depth)],
            approved=rng.random() < 0.2,
        )
        requests.append(
            DecisionRequest(EntityRef("Agent", rng.choice(agents)), tool.action_id,
                            EntityRef("Tool", tool.tool_id), context)
        )
    return requests


def call_hour(rng: random.Random) -> int:
    """Mostly working hours, so that hour-of-day forbids do not decide most requests."""
    return rng.randint(8, 18) if rng.random() < 0.85 else rng.randint(0, 23)
