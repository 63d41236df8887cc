from __future__ import annotations

import proctor.audit


def test_the_public_surface_is_exactly_all() -> None:
    public = {name for name in dir(proctor.audit) if not name.startswith("_")}
    modules = {"attribution", "chain", "checkpoint_chain", "checkpoints", "cuts", "deadlines",
               "driver", "events", "export",
               "masking",
               "features", "ocsf", "query", "recording", "retention", "sinks", "streaming",
               "verification",
               "writer"}
    assert public - modules == set(proctor.audit.__all__)
    for name in proctor.audit.__all__:
        assert getattr(proctor.audit, name) is not None
