"""A standards-compliant OAuth 2.0 / OpenID Connect provider for custom connectors.

Every path prefix is its own issuer ("tenant"), so each test gets a fresh one without touching
the others: the issuer https://idp.credex.test/t/abc serves
  /t/abc/.well-known/openid-configuration           (OpenID Connect Discovery 1.0)
  /.well-known/oauth-authorization-server/t/abc     (RFC 8414, well-known inserted after the host)
  /t/abc/authorize, /token, /userinfo, /revoke, /jwks
ID tokens are RS256 JWTs (iss, sub, aud, exp, iat, nonce) signed with the key of /jwks.

Misbehaviour: a host in `wrong_issuer_hosts` (evil-issuer.credex.test) serves discovery
documents that name another issuer; `discovery_patch[issuer]` changes fields of one tenant's
documents (e.g. a token_endpoint on a metadata address); faults (server.Fault) on a tenant's
paths give redirects, oversized or slow answers and error statuses.
"""

from __future__ import annotations

import json
import time
import uuid

from cryptography.hazmat.primitives.asymmetric import rsa

from .oauth import OAuthServer
from .server import Client, CodeGrant, Reply, Request, TokenGrant, User

DISCOVERY_OIDC = "/.well-known/openid-configuration"
DISCOVERY_RFC8414 = "/.well-known/oauth-authorization-server"
SUFFIXES = ("/authorize", "/token", "/userinfo", "/revoke", "/jwks")


class GenericOidc(OAuthServer):
    label = "generic-oidc"
    authorize_path = "/authorize"
    token_path = "/token"
    revoke_path = "/revoke"
    token_body = ("form",)
    access_expires_in = 3600
    rotate_refresh = True
    token_prefix = "idp"

    def __init__(self, ca, hosts: list[str], wrong_issuer_hosts: tuple[str, ...] = ()):
        super().__init__(ca, hosts, User(id="00u1e2e", login="barbara-e2e", name="Barbara E2E",
                                         email="barbara@example.test"))
        self.wrong_issuer_hosts = set(wrong_issuer_hosts)
        self.discovery_patch: dict[str, dict] = {}
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]

    # -- control API ---------------------------------------------------------------------------
    def issuer(self, tenant: str, host: str | None = None) -> str:
        """The issuer URL of a tenant ("t/<id>" or "" for the root) on a host."""
        tenant = tenant.strip("/")
        return f"https://{host or self.hosts[0]}" + (f"/{tenant}" if tenant else "")

    def new_tenant(self, host: str | None = None) -> str:
        """A fresh issuer URL on `host` (the first host by default)."""
        return self.issuer(f"t/{uuid.uuid4().hex[:12]}", host)

    def endpoints(self, issuer: str) -> dict[str, str]:
        return {"authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token",
                "userinfo_endpoint": f"{issuer}/userinfo", "revocation_endpoint": f"{issuer}/revoke",
                "jwks_uri": f"{issuer}/jwks"}

    def public_jwk(self) -> dict:
        import jwt

        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self._key.public_key()))
        return jwk | {"kid": self.kid, "use": "sig", "alg": "RS256"}

    # -- dispatch ----------------------------------------------------------------------------------
    def _split(self, path: str) -> tuple[str, str] | None:
        """(tenant prefix, endpoint) of a path, or None."""
        if path.startswith(DISCOVERY_RFC8414):
            return path[len(DISCOVERY_RFC8414):], "rfc8414"
        if path.endswith(DISCOVERY_OIDC):
            return path[: -len(DISCOVERY_OIDC)], "oidc"
        for suffix in SUFFIXES:
            if path.endswith(suffix):
                return path[: -len(suffix)], suffix
        return None

    def _issuer_of(self, req: Request, prefix: str) -> str:
        return f"https://{req.host}{prefix}"

    def handle(self, req: Request) -> Reply:
        split = self._split(req.path)
        if split is None:
            return Reply.json(404, {"error": "not_found"})
        prefix, what = split
        issuer = self._issuer_of(req, prefix)
        if what in ("oidc", "rfc8414"):
            return Reply.json(200, self.discovery(req, issuer, oidc=what == "oidc")) if req.method == "GET" \
                else Reply.json(405, {"error": "method_not_allowed"})
        userinfo = lambda r: self._with_grant(r, self.userinfo)  # noqa: E731
        fn = {("GET", "/authorize"): self.authorize, ("POST", "/token"): self.token,
              ("GET", "/userinfo"): userinfo, ("POST", "/userinfo"): userinfo,
              ("POST", "/revoke"): self.revoke, ("GET", "/jwks"): self.jwks}.get((req.method, what))
        if fn is None:
            return Reply.json(405, {"error": "method_not_allowed"})
        return fn(req)

    def discovery(self, req: Request, issuer: str, *, oidc: bool) -> dict:
        named = issuer
        if req.host in self.wrong_issuer_hosts:
            named = issuer.replace(f"https://{req.host}", f"https://{self.hosts[0]}", 1)
        doc = {"issuer": named, **self.endpoints(issuer),
               "response_types_supported": ["code"],
               "grant_types_supported": ["authorization_code", "refresh_token"],
               "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
               "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
               "code_challenge_methods_supported": ["S256"],
               "scopes_supported": ["openid", "profile", "email", "offline_access"]}
        if oidc:
            doc |= {"subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"],
                    "claims_supported": ["sub", "name", "email", "preferred_username"]}
        return doc | self.discovery_patch.get(issuer, {})

    def jwks(self, req: Request) -> Reply:
        return Reply.json(200, {"keys": [self.public_jwk()]})

    def wants_refresh(self, scope: str) -> bool:
        return "offline_access" in scope.split() or self.issues_refresh

    def with_id_token(self, req: Request, payload: dict, client: Client, code: CodeGrant) -> dict:
        if "openid" not in code.scope.split():
            return payload
        import jwt

        split = self._split(req.path)
        now = int(time.time())
        claims = {"iss": self._issuer_of(req, split[0] if split else ""), "sub": code.user.id,
                  "aud": client.client_id, "iat": now, "exp": now + 300, "email": code.user.email,
                  "name": code.user.name, "preferred_username": code.user.login}
        if code.nonce is not None:
            claims["nonce"] = code.nonce
        payload["id_token"] = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        return payload

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"error": "invalid_token"}, [("WWW-Authenticate", 'Bearer error="invalid_token"')])

    def userinfo(self, req: Request, grant: TokenGrant) -> Reply:
        u = grant.user
        return Reply.json(200, {"sub": u.id, "name": u.name, "email": u.email, "preferred_username": u.login})
