"""The authorization-code OAuth 2.0 server the provider test servers have in common, with the
knobs where the real providers differ (how the client authenticates, how the token answer and
its errors are shaped, whether refresh tokens rotate, expiry values, scope separators).

Flow as a browser and credex drive it:
  GET  <authorize>  the consent: records the request, answers 302 to redirect_uri with
                    ?code=..&state=.. (or ?error=access_denied&state=.. when `consent` is
                    "deny"); the code keeps client_id, redirect_uri, scope, PKCE challenge, nonce.
  POST <token>      grant_type=authorization_code (code, redirect_uri, code_verifier checked
                    against the S256 challenge) or refresh_token.
"""

from __future__ import annotations

import secrets
import time
import urllib.parse

from .server import Client, CodeGrant, Reply, Request, SimServer, TokenBook, TokenGrant, User


class OAuthServer(SimServer):
    # -- knobs (class defaults; a test may change them on the instance) ----------------------
    authorize_path = "/oauth/authorize"
    token_path = "/oauth/token"
    revoke_path: str | None = None
    token_auth = ("client_secret_post", "client_secret_basic")  # accepted client authentication
    token_body = ("form",)            # accepted request bodies: "form", "json"
    access_expires_in: int | None = 3600
    refresh_expires_in: int | None = None
    issues_refresh = True
    rotate_refresh = True
    scope_separator = " "
    token_prefix = ""
    code_ttl = 600
    # Identity API: path -> name of a method (req, grant) -> Reply, served for a valid bearer.
    identity_paths: dict[str, str] = {}

    def __init__(self, ca, hosts: list[str], user: User):
        super().__init__(ca, hosts)
        self.book = TokenBook(self.token_prefix)
        self.clients: dict[str, Client] = {}
        self.user = user              # who consents at the authorization endpoint
        self.consent = "grant"        # or "deny": the user refuses (error=access_denied)
        self.require_pkce = False     # refuse authorization requests without an S256 challenge
        self.granted_scope: str | None = None  # None: grant what was asked; else exactly this

    # -- control API ---------------------------------------------------------------------------
    def register_client(self, client_id: str, client_secret: str, redirect_uris: tuple[str, ...] = (),
                        auth_method: str | None = None) -> Client:
        c = Client(client_id, client_secret, tuple(redirect_uris), auth_method)
        self.clients[client_id] = c
        return c

    def issue_tokens(self, client_id: str, scope: str = "", user: User | None = None) -> dict:
        """Tokens as if a consent had completed: the provider's token answer as a dict."""
        grant = TokenGrant(client_id, user or self.user, scope, None)
        return self._token_payload(grant, refresh=None)

    def authorization_requests(self, since: int = 0) -> list[Request]:
        return self.requests(since=since, path_suffix=self.authorize_path)

    def token_requests(self, since: int = 0) -> list[Request]:
        return self.requests(since=since, path_suffix=self.token_path)

    # -- dispatch ----------------------------------------------------------------------------------
    def routes(self) -> dict[tuple[str, str], object]:
        r = {("GET", self.authorize_path): self.authorize, ("POST", self.token_path): self.token}
        if self.revoke_path:
            r[("POST", self.revoke_path)] = self.revoke
        for path, name in self.identity_paths.items():
            r[("GET", path)] = lambda req, fn=getattr(self, name): self._with_grant(req, fn)
        return r

    def handle(self, req: Request) -> Reply:
        fn = self.routes().get((req.method, req.path))
        if fn is None:
            known = {p for _, p in self.routes()}
            return Reply.json(405 if req.path in known else 404,
                              {"message": "Not Found" if req.path not in known else "Method Not Allowed"})
        return fn(req)

    # -- authorization endpoint ------------------------------------------------------------------
    def authorize_problem(self, req: Request, client: Client) -> str | None:
        """A provider-specific reason to refuse the request before redirecting (error page)."""
        return None

    def authorize(self, req: Request) -> Reply:
        q = req.query
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return Reply.text(400, "unknown client_id")
        redirect_uri = q.get("redirect_uri")
        if redirect_uri is None and len(client.redirect_uris) == 1:
            redirect_uri = client.redirect_uris[0]
        if not redirect_uri or (client.redirect_uris and redirect_uri not in client.redirect_uris):
            # Never redirect to a URI the client did not register (RFC 6749 4.1.2.1).
            return Reply.text(400, "redirect_uri mismatch")
        problem = self.authorize_problem(req, client)
        if problem:
            return Reply.text(400, problem)
        state = q.get("state")

        def back(params: dict) -> Reply:
            if state is not None:
                params["state"] = state
            sep = "&" if urllib.parse.urlsplit(redirect_uri).query else "?"
            return Reply.redirect(redirect_uri + sep + urllib.parse.urlencode(params))

        if q.get("response_type") != "code":
            return back({"error": "unsupported_response_type"})
        challenge, method = q.get("code_challenge"), q.get("code_challenge_method")
        if challenge is not None and method not in ("S256", "plain", None):
            return back({"error": "invalid_request", "error_description": "code_challenge_method"})
        if challenge is not None and method is None:
            method = "plain"  # RFC 7636 4.3 default
        if self.require_pkce and (challenge is None or method != "S256"):
            return back({"error": "invalid_request", "error_description": "PKCE S256 required"})
        if self.consent != "grant":
            return back({"error": "access_denied", "error_description": "The user denied access"})
        scope = q.get("scope", "")
        grant = CodeGrant(client.client_id, q.get("redirect_uri"), scope, self.user, challenge, method,
                          q.get("nonce"), time.time() + self.code_ttl)
        return back({"code": self.book.new_code(grant)})

    # -- token endpoint --------------------------------------------------------------------------
    def client_of(self, req: Request) -> Client | None:
        """The authenticated client, by the methods this provider accepts (and the one the
        client registered with, if it did); None when authentication fails."""
        basic, body_id, body_secret = req.basic_auth, req.form.get("client_id"), req.form.get("client_secret")
        if basic and body_secret is not None:
            return None  # two methods at once (RFC 6749 2.3)
        if basic:
            method, (cid, secret) = "client_secret_basic", basic
        elif body_secret is not None:
            method, cid, secret = "client_secret_post", body_id, body_secret
        else:
            return None
        client = self.clients.get(cid or "")
        if client is None or method not in self.token_auth:
            return None
        if client.auth_method is not None and client.auth_method != method:
            return None
        if not secrets.compare_digest(client.client_secret.encode(), (secret or "").encode()):
            return None
        return client

    def body_kind(self, req: Request) -> str | None:
        ctype = req.headers.get("content-type", "").split(";")[0].strip().lower()
        return {"application/x-www-form-urlencoded": "form", "application/json": "json"}.get(ctype)

    def token_error(self, req: Request, status: int, error: str, description: str) -> Reply:
        headers = [("WWW-Authenticate", 'Basic realm="oauth"')] if status == 401 else []
        return Reply.json(status, {"error": error, "error_description": description}, headers)

    def token_reply(self, req: Request, payload: dict) -> Reply:
        return Reply.json(200, payload)

    def wants_refresh(self, scope: str) -> bool:
        return self.issues_refresh

    def _token_payload(self, grant: TokenGrant, refresh: str | None) -> dict:
        scope = self.granted_scope if self.granted_scope is not None else grant.scope
        with_refresh = refresh is None and self.wants_refresh(scope)
        access, new_refresh = self.book.issue(grant.client_id, grant.user, scope, self.access_expires_in,
                                              with_refresh)
        payload: dict = {"access_token": access, "token_type": "Bearer"}
        if self.access_expires_in:
            payload["expires_in"] = self.access_expires_in
        rt = new_refresh or refresh
        if rt:
            payload["refresh_token"] = rt
            if self.refresh_expires_in:
                payload["refresh_token_expires_in"] = self.refresh_expires_in
        payload["scope"] = self.scope_separator.join(scope.split())
        return self.shape_payload(payload, grant)

    def shape_payload(self, payload: dict, grant: TokenGrant) -> dict:
        return payload

    def token(self, req: Request) -> Reply:
        if self.body_kind(req) not in self.token_body:
            return self.token_error(req, 400, "invalid_request", "unsupported request body")
        client = self.client_of(req)
        if client is None:
            return self.token_error(req, 401, "invalid_client", "client authentication failed")
        grant_type = req.form.get("grant_type")
        if grant_type == "authorization_code":
            got = self.book.redeem_code(req.form.get("code", ""), client.client_id, req.form.get("redirect_uri"),
                                        req.form.get("code_verifier"))
            if isinstance(got, str):
                return self.token_error(req, 400, got, "the code is invalid, used, expired or its PKCE "
                                        "verifier does not match")
            grant = TokenGrant(client.client_id, got.user, got.scope, None)
            payload = self._token_payload(grant, refresh=None)
            return self.token_reply(req, self.with_id_token(req, payload, client, got))
        if grant_type == "refresh_token":
            got = self.book.use_refresh(req.form.get("refresh_token", ""), client.client_id, self.rotate_refresh)
            if isinstance(got, str):
                return self.refresh_error(req)
            keep = None if self.rotate_refresh else req.form.get("refresh_token")
            return self.token_reply(req, self._token_payload(got, refresh=keep))
        return self.token_error(req, 400, "unsupported_grant_type", "grant_type")

    def refresh_error(self, req: Request) -> Reply:
        return self.token_error(req, 400, "invalid_grant", "the refresh token is invalid, revoked or used")

    def with_id_token(self, req: Request, payload: dict, client: Client, code: CodeGrant) -> dict:
        return payload

    # -- revocation (RFC 7009 shape; providers without one have revoke_path None) ----------------
    def revoke(self, req: Request) -> Reply:
        client = self.client_of(req)
        if client is None:
            return self.token_error(req, 401, "invalid_client", "client authentication failed")
        self.book.revoke(req.form.get("token", ""), client.client_id)
        return Reply.json(200, {})  # RFC 7009 2.2: also for an unknown token

    # -- identity ------------------------------------------------------------------------------------
    def bearer_grant(self, req: Request) -> TokenGrant | None:
        return self.book.check_access(req.bearer)

    def api_precheck(self, req: Request) -> Reply | None:
        """A provider's refusal before the token is looked at (GitHub: no User-Agent)."""
        return None

    def unauthorized(self) -> Reply:
        return Reply.json(401, {"message": "Bad credentials"}, [("WWW-Authenticate", "Bearer")])

    def _with_grant(self, req: Request, fn) -> Reply:
        refused = self.api_precheck(req)
        if refused is not None:
            return refused
        grant = self.bearer_grant(req)
        return self.unauthorized() if grant is None else fn(req, grant)
