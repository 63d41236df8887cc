"""Agents' Cedar entities in shards, so that a change to one agent costs the same
whatever the size of the fleet.

Cedar evaluates a request against one pre-parsed ``cedarpy.Entities`` handle, and a
handle cannot be changed, only rebuilt. Holding every agent in one handle made a
change to one agent (a review, a suspension, a risk score) rebuild all of them:
over a second with 10,000 agents. Here the agents are spread over shards by a
stable hash of their id; each shard's handle is the *base* (tools, servers,
connectors, humans, groups: everything that is not an agent) plus that shard's
agents, built by adding them to the base handle (``with_added_json_str``, which
clones the base rather than parsing it again). A change to one agent rebuilds one
shard: the base clone and about :data:`SHARD_SIZE` agents. The number of shards
doubles when the fleet outgrows it, so that cost stays bounded (a doubling rebuilds
every shard once, like a hash table growing).

A request's principal is evaluated against its own shard's handle, which holds
everything a request can reach from it: the agent, its owner and its groups, and
the base. An owner or group missing from the base is added to the shard with no
roles or parents, as :func:`proctor.identity.agent_principals` does for the whole
graph. The one thing a shard does not hold is *another* agent: a policy that reads
an attribute of an agent named literally (``Agent::"…".risk_score``) fails to
evaluate for principals of other shards, and a failed evaluation is a deny.

The shards' members and handles are swapped as one value (:class:`_Spread`), so a
reader never pairs one shard's members with another generation's handle:
a decision is evaluated against a handle that holds *exactly* the entity it read and
checked (:meth:`AgentShards.handle_with`, else the one :meth:`AgentShards.put`
returns), never one holding another version of the agent put meanwhile by another
thread (the change feed's, or another decision's).
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import cedarpy

from proctor.errors import ConfigError

__all__ = ["SHARD_SIZE", "AgentShards"]

SHARD_SIZE = 32  # agents per shard, on average, before the shards double
_MAX_SHARDS = 4096


def _shard_of(agent_id: str, count: int) -> int:
    return zlib.crc32(agent_id.encode()) & (count - 1)


class _Spread(NamedTuple):
    """The shards as one value: each shard's members and the handle built of them (the
    same index), replaced whole, never one list without the other."""

    members: list[dict[str, Mapping[str, Any]]]
    handles: list[cedarpy.Entities]


class AgentShards:
    """Agents' entities over a base handle; one handle per shard, rebuilt alone."""

    def __init__(self, base: cedarpy.Entities, base_uids: frozenset[tuple[str, str]],
                 agents: Iterable[Mapping[str, Any]] = ()) -> None:
        self.base = base
        self._base_uids = base_uids
        everyone = {_checked(e): e for e in agents}
        members = _spread(everyone, _count_for(len(everyone)))
        self._spread = _Spread(members, [self._build(m) for m in members])
        self._size = len(everyone)
        self._lock = threading.Lock()  # one rebuilder at a time; readers never wait

    def __len__(self) -> int:
        return self._size

    @property
    def shard_count(self) -> int:
        return len(self._spread.members)

    def agents(self) -> list[Mapping[str, Any]]:
        return [e for members in self._spread.members for e in members.values()]

    def entity(self, agent_id: str) -> Mapping[str, Any] | None:
        """The entity held for ``agent_id`` (the object put, not a copy), or None."""
        members = self._spread.members
        return members[_shard_of(agent_id, len(members))].get(agent_id)

    def handle_for(self, agent_id: str) -> cedarpy.Entities:
        """The handle holding ``agent_id`` (if registered), its owner, groups and the base."""
        handles = self._spread.handles
        return handles[_shard_of(agent_id, len(handles))]

    def handle_with(self, entity: Mapping[str, Any], agent_id: str) -> cedarpy.Entities | None:
        """The handle of ``agent_id``'s shard if that shard holds ``entity`` itself (or an
        equal one) as ``agent_id``'s entity, else None (:meth:`put` it: the handle it
        returns holds it). The members and the handle are read as one value: another
        thread's put of another version of the agent may come at any moment, never
        between them."""
        members, handles = self._spread
        index = zlib.crc32(agent_id.encode()) & (len(members) - 1)  # _shard_of, inline
        held = members[index].get(agent_id)
        if held is entity or (held is not None and held == entity):
            return handles[index]
        return None

    def put(self, entity: Mapping[str, Any]) -> cedarpy.Entities:
        """Add or replace one agent's entity; rebuilds its shard only (or, when the fleet
        has outgrown the shards, doubles them). Returns the handle holding it."""
        agent_id = _checked(entity)
        with self._lock:
            members_of = self._spread.members
            index = _shard_of(agent_id, len(members_of))
            members = members_of[index]
            if members.get(agent_id) == entity:
                return self._spread.handles[index]
            return self._replace(index, {**members, agent_id: entity},
                                 self._size + (agent_id not in members), agent_id)

    def remove(self, agent_id: str) -> None:
        with self._lock:
            index = _shard_of(agent_id, len(self._spread.members))
            members = self._spread.members[index]
            if agent_id in members:
                self._replace(index, {k: v for k, v in members.items() if k != agent_id},
                              self._size - 1, agent_id)

    def _replace(self, index: int, members: dict[str, Mapping[str, Any]], size: int,
                 agent_id: str) -> cedarpy.Entities:
        """Swap in one shard's new members and handle (built before anything changes, so
        a failure changes nothing); when the fleet has outgrown the shards, double them
        all instead. Returns the handle of ``agent_id``'s shard as swapped in."""
        old = self._spread
        wanted = _count_for(size)
        if wanted > len(old.members):
            everyone = {k: v for i, m in enumerate(old.members) if i != index
                        for k, v in m.items()}
            spread = _spread({**everyone, **members}, wanted)
            self._spread = _Spread(spread, [self._build(m) for m in spread])
            self._size = size
            return self._spread.handles[_shard_of(agent_id, wanted)]
        handle = self._build(members)
        shards, handles = list(old.members), list(old.handles)
        shards[index], handles[index] = members, handle
        self._spread, self._size = _Spread(shards, handles), size
        return handle

    def _build(self, members: Mapping[str, Mapping[str, Any]]) -> cedarpy.Entities:
        if not members:
            return self.base
        delta: dict[tuple[str, str], Mapping[str, Any]] = {}
        for agent_id, entity in members.items():
            delta[("Agent", agent_id)] = entity
            owner = entity["attrs"]["owner"]["__entity"]
            _missing(delta, self._base_uids, "Human", str(owner["id"]), {"roles": []})
            for parent in entity.get("parents") or ():
                _missing(delta, self._base_uids, "Group", str(parent["id"]), {})
        try:
            return self.base.with_added_json_str(json.dumps(list(delta.values())))
        except ValueError as exc:
            raise ConfigError(f"agent entities are not valid: {exc}") from exc


_ATTRS = {"name": str, "trust_domain": str, "owner": dict, "trust_state": str,
          "risk_score": int, "risk_factors": list}


def _checked(entity: Mapping[str, Any]) -> str:
    """The agent's id, once its entity has the schema's shape (the shards are built
    without the schema: checking each addition against it costs as much as the rest)."""
    try:
        uid, attrs, parents = entity["uid"], entity["attrs"], entity.get("parents") or []
        shaped = (uid["type"] == "Agent" and isinstance(uid["id"], str)
                  and set(attrs) == set(_ATTRS)
                  and all(type(attrs[k]) is t for k, t in _ATTRS.items())
                  and all(isinstance(f, str) for f in attrs["risk_factors"])
                  and set(attrs["owner"]) == {"__entity"}
                  and attrs["owner"]["__entity"]["type"] == "Human"
                  and isinstance(attrs["owner"]["__entity"]["id"], str)
                  and all(p["type"] == "Group" and isinstance(p["id"], str) for p in parents))
    except (KeyError, TypeError, AttributeError):
        shaped = False
    if not shaped:
        raise ConfigError("an agent's entity does not have the schema's shape")
    return str(uid["id"])


def _spread(agents: Mapping[str, Mapping[str, Any]], count: int
            ) -> list[dict[str, Mapping[str, Any]]]:
    shards: list[dict[str, Mapping[str, Any]]] = [{} for _ in range(count)]
    for agent_id, entity in agents.items():
        shards[_shard_of(agent_id, count)][agent_id] = entity
    return shards


def _missing(delta: dict[tuple[str, str], Mapping[str, Any]],
             base: frozenset[tuple[str, str]], type_: str, id_: str,
             attrs: dict[str, Any]) -> None:
    if (type_, id_) not in base:
        delta.setdefault((type_, id_), {"uid": {"type": type_, "id": id_}, "attrs": attrs,
                                        "parents": []})


def _count_for(agents: int) -> int:
    count = 1
    while count * SHARD_SIZE < agents and count < _MAX_SHARDS:
        count *= 2
    return count
