"""The end-to-end tests reuse the identity tests' registry and trust fixtures."""

from tests.identity.conftest import (  # noqa: F401 - fixtures, used by name
    authenticator,
    oidc_authority,
    registry,
    svid_authority,
    trust,
    wall_clock,
)
