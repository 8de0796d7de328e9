"""Service-account tokens: JWTs signed by kubesim, bound to the account's UID.

Claims follow the API server's bound tokens (``iss``, ``sub``, ``aud``, ``exp``, ``iat``,
``nbf``, ``jti`` and the ``kubernetes.io`` object), signed with ES256. A token is accepted
only while its signature verifies, it has not expired, and the service account it names
still exists with the same UID: deleting the account kills its tokens, as in Kubernetes.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

__all__ = ["ISSUER", "ServiceAccountClaims", "TokenSigner"]

ISSUER = "https://kubernetes.default.svc.cluster.local"
DEFAULT_AUDIENCES = (ISSUER,)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ServiceAccountClaims:
    namespace: str
    name: str
    uid: str
    audiences: tuple[str, ...]
    expires: int
    issued: int


class TokenSigner:
    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = secrets.token_hex(8)

    def issue(
        self,
        *,
        namespace: str,
        name: str,
        uid: str,
        expiration_seconds: int,
        audiences: tuple[str, ...] = DEFAULT_AUDIENCES,
        now: int | None = None,
    ) -> tuple[str, int]:
        """A signed token and its expiry (Unix seconds)."""
        issued = int(time.time()) if now is None else now
        expires = issued + expiration_seconds
        claims: dict[str, Any] = {
            "aud": list(audiences),
            "exp": expires,
            "iat": issued,
            "iss": ISSUER,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": {
                "namespace": namespace,
                "serviceaccount": {"name": name, "uid": uid},
            },
            "nbf": issued,
            "sub": f"system:serviceaccount:{namespace}:{name}",
        }
        header = {"alg": "ES256", "kid": self.key_id, "typ": "JWT"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64(signature)}", expires

    def verify(self, token: str, *, now: int | None = None) -> ServiceAccountClaims | None:
        """The claims of a valid, unexpired token signed by this kubesim; otherwise None."""
        parts = token.split(".")
        if len(parts) != 3:
            return None
        try:
            header = json.loads(_unb64(parts[0]))
            signature = _unb64(parts[2])
            if header.get("alg") != "ES256" or len(signature) != 64:
                return None
            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            self._key.public_key().verify(
                der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256())
            )
            claims = json.loads(_unb64(parts[1]))
            current = int(time.time()) if now is None else now
            if claims["iss"] != ISSUER or not claims["nbf"] <= current < claims["exp"]:
                return None
            info = claims["kubernetes.io"]
            return ServiceAccountClaims(
                namespace=info["namespace"],
                name=info["serviceaccount"]["name"],
                uid=info["serviceaccount"]["uid"],
                audiences=tuple(claims["aud"]),
                expires=claims["exp"],
                issued=claims["iat"],
            )
        except (InvalidSignature, ValueError, KeyError, TypeError):
            return None
