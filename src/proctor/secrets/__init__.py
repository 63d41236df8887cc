"""proctor's secret store: downstream credentials (upstream API keys, tokens) sealed
under the master key, handed to the gateway only as leases under a grant.

>>> from proctor.secrets import check_name
>>> check_name("crm.api-key")
'crm.api-key'

See ``docs/secrets.md``.
"""

from proctor.secrets.store import LEASE_KIND, SecretStore
from proctor.secrets.values import (
    MAX_NAME_CHARS,
    MAX_VALUE_BYTES,
    SecretInfo,
    SecretLease,
    check_name,
    check_value,
)

__all__ = [
    "LEASE_KIND",
    "MAX_NAME_CHARS",
    "MAX_VALUE_BYTES",
    "SecretInfo",
    "SecretLease",
    "SecretStore",
    "check_name",
    "check_value",
]
