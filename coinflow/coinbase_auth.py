"""Coinbase Developer Platform (CDP) API keys: the short-lived ES256 JWT that authenticates a request.

A WebSocket subscription carries a JWT without a ``uri`` claim; a REST
request carries one naming its method, host and path
(``"POST api.coinbase.com/api/v3/brokerage/orders"``), so a JWT is good for one
endpoint only and a fresh one signs every request. Shared by the market-data
source and the trading gateway. Nothing here does I/O or reads the clock; the
time comes in as an argument.
"""

from __future__ import annotations

import secrets
from typing import Any

JWT_LIFETIME_S = 120  # what Coinbase allows: "Your JWT expires after 2 minutes"
ISSUER = "cdp"


def cdp_signing_key(private_key_pem: str) -> Any:
    """The P-256 EC private key of a CDP API key (what ES256 signs with).

    Raises ValueError saying what is wrong, never quoting the key, when the PEM is not one: checked at
    start-up, since a bad key would otherwise fail only when the first request is signed.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ValueError("not a PEM private key (expected -----BEGIN EC PRIVATE KEY----- ..., unencrypted)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(  # noqa: TRY004 - the secret's content is wrong, not the argument's type
            "not an EC private key on the P-256 curve, which CDP API keys (ES256) are"
        )
    return key


def rest_uri(method: str, host: str, path: str) -> str:
    """The ``uri`` claim of a REST request's JWT: ``"GET api.coinbase.com/api/v3/brokerage/accounts"`` (the
    host as the request names it, the path without its query)."""
    return f"{method.upper()} {host}{path}"


def cdp_jwt(key_name: str, private_key_pem: str, now_s: int, nonce: str | None = None, uri: str | None = None) -> str:
    """The JWT (ES256, 2 minutes) of a CDP API key: for a WebSocket subscription without `uri`, for one REST
    request with its `rest_uri`."""
    import jwt

    claims: dict[str, Any] = {"iss": ISSUER, "nbf": now_s, "exp": now_s + JWT_LIFETIME_S, "sub": key_name}
    if uri is not None:
        claims["uri"] = uri
    headers = {"kid": key_name, "nonce": nonce or secrets.token_hex()}
    return jwt.encode(claims, cdp_signing_key(private_key_pem), algorithm="ES256", headers=headers)
