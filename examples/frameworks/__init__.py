"""One example per agent framework: the same support agent, guarded by proctor.

Each ``run(base_url, admin_token)`` plays four calls against a running ``proctor
serve`` (the embedded default's example policies): one allowed, one denied as out of
the grant's scope, one held for a human and approved through the API, and one after
its grant was revoked. What they share is in ``support`` (the agent: its scope, tools,
calls and set-up) and ``operator`` (the human side, through the API); each example
holds only its framework's wiring. ``tests/client/`` runs every one in CI.
"""
