"""JOSE, once: every part of proctor encodes, thumbprints, signs and reads tokens here.

One module per standard, as joserfc has:

- :mod:`~proctor.jose.base64url` — RFC 7515 §2: base64url without padding, decoded
  strictly (one encoding per byte string);
- :mod:`~proctor.jose.jwk` — RFC 7517, RFC 7638, RFC 8037, RFC 9864: what makes a JWK
  private, thumbprints, P-256 and Ed25519 keys as JWKs, and the algorithm names each
  key type signs with (``Ed25519`` and ``EdDSA`` alike; proctor writes ``Ed25519``);
- :mod:`~proctor.jose.jws` — RFC 7515, RFC 7518: reading a compact JWS before its
  signature is checked (bounded in size and nesting), raw ``r || s`` ECDSA, RSA and
  Ed25519 signatures, and whether an algorithm fits a key;
- :mod:`~proctor.jose.dpop` — RFC 9449: the proof of possession an agent writes for each
  use of a grant (one writer, for the SDK and the server; its nonces counted once).

Grants, proofs of possession, identity proofs, OIDC tokens, audit checkpoints and the
output guard use these; none decodes base64url or a token by hand.
"""

from proctor.jose.base64url import b64url_decode, b64url_encode
from proctor.jose.jwk import (
    ALGORITHMS_BY_KEY,
    ED25519,
    PRIVATE_MEMBERS,
    PrivateKey,
    PublicKey,
    algorithms_for,
    load_public_jwk,
    private_members,
    public_jwk,
    thumbprint,
)
from proctor.jose.jws import (
    MIN_RSA_BITS,
    UnverifiedJws,
    decode_json_part,
    key_fits,
    read_compact,
    sign,
    signing_algorithm,
    verifier,
    verify_signature,
    write_compact,
)

__all__ = [
    "ALGORITHMS_BY_KEY",
    "ED25519",
    "MIN_RSA_BITS",
    "PRIVATE_MEMBERS",
    "PrivateKey",
    "PublicKey",
    "UnverifiedJws",
    "algorithms_for",
    "b64url_decode",
    "b64url_encode",
    "decode_json_part",
    "key_fits",
    "load_public_jwk",
    "private_members",
    "public_jwk",
    "read_compact",
    "sign",
    "signing_algorithm",
    "thumbprint",
    "verifier",
    "verify_signature",
    "write_compact",
]
