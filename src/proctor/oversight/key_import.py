"""An operator's import of a legacy checkpoint key, with its audit event, in one
transaction.

Earlier versions signed audit checkpoints with a plaintext per-home key
(``keys/issuer.pem``). proctor never trusts such a file on its own: a key file dropped
into a home would otherwise verify checkpoints from the next start on.
``proctor audit import-key`` adds it to the issuer keyring, sealed and retired (it signs
nothing new and verifies no grant), as the effects of the operator's
``audit.key_import`` event (:mod:`proctor.oversight.audited`): the keyring holds the key
if and only if the log holds the event. A key the keyring holds already is left as it
is, and no event written.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from proctor.audit import AuditEvent, AuditLog, WriteCursor
from proctor.audit.writer import WITHDRAWN
from proctor.errors import ProctorError
from proctor.grants import IssuerKeyring
from proctor.keys import LocalSigner
from proctor.oversight.audited import commit_with_event, insert_row
from proctor.store.tables import issuer_keys

__all__ = ["import_key_with_event"]


@dataclass(slots=True)
class _Import:
    row: dict[str, Any]
    event: AuditEvent
    made: bool = False
    refusal: ProctorError | None = None  # none: a key held already is no refusal

    def apply(self, tx: WriteCursor) -> AuditEvent | None:
        self.made = insert_row(tx, issuer_keys, self.row, unless_taken=True)
        return self.event if self.made else WITHDRAWN


def import_key_with_event(audit: AuditLog, keyring: IssuerKeyring, signer: LocalSigner,
                          event: AuditEvent) -> bool:
    """Add ``signer``'s key to ``keyring``, retired, with ``event`` (an
    ``audit.key_import``; its target filled in here) in one transaction; whether it was
    added (False: the keyring held it already, nothing written). Raises
    :class:`~proctor.errors.AuditUnavailableError`: then nothing was added."""
    event = replace(event, target=f'IssuerKey::"{signer.kid}"')
    change = _Import(keyring.retired_row(signer), event)
    commit_with_event(audit, event, change)
    keyring.refresh()
    return change.made
