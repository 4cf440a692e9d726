"""A real Keycloak for the black-box tests: started once per pytest session, only when a test asks
for the `keycloak` fixture (tests/e2e/conftest.py), and stopped at the session's end.

It runs from the installation `scripts/setup keycloak` made (scripts/lib/keycloak.sh:
keycloak_start / keycloak_stop) in an instance home of the session's temp dir, on 127.0.0.1 and a
free port, https only, with a certificate for 127.0.0.1, localhost and keycloak.credex.test from
the provider test servers' CA (so credex's oauth service, which trusts that CA through
CREDEX_OAUTH_CA_FILE, and the gateway, through CREDEX_JWKS_CA_FILE, verify it like any peer). The
realms are deploy/keycloak/realm-*.json, imported at start into an in-memory database. Its log
stays in the instance home (`log_path`) and is shown when it fails to start.

Two ways to reach it, one issuer. Keycloak's public name is https://keycloak.credex.test (port
443), like the provider test servers' real names: every URL it publishes (issuer, discovery,
authorization endpoint) uses it, and credex's oauth reaches it through the entry `connect_to`
adds to CREDEX_OAUTH_TEST_CONNECT_TO. Whatever reaches it directly (the tests' token requests,
the gateway's JWKS fetch, which has no connect-to override) uses https://127.0.0.1:<port>: the
certificate names that address too, and the tokens still say iss=https://keycloak.credex.test/...
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import credex_harness as h

REALM = "credex"
FOREIGN_REALM = "elsewhere"
AUDIENCE = "credex"
# Test-only values, the same as in deploy/keycloak/realm-*.json.
PASSWORDS = {(REALM, "alice"): "test-only-alice-password", (REALM, "bob"): "test-only-bob-password",
             (FOREIGN_REALM, "alice"): "test-only-elsewhere-password"}
CLIENT_SECRETS = {"agent-runtime": "test-only-agent-runtime-secret",
                  "credex-connector": "test-only-credex-connector-secret"}
UI_CLIENT = "credex-ui"
START_TIMEOUT = 240  # seconds; ~15 s on an idle 2-core machine, much more under load
PUBLIC_HOST = "keycloak.credex.test"
HOSTS = ["127.0.0.1", "localhost", PUBLIC_HOST]

_SCRIPT = 'set -euo pipefail; . "$0/scripts/lib/common.sh"; . "$0/scripts/lib/keycloak.sh"; "$@"'


def run_keycloak_sh(*call: str, timeout: float) -> subprocess.CompletedProcess:
    """Call a function of scripts/lib/keycloak.sh (with the tests' CREDEX_TOOLS_DIR)."""
    return subprocess.run(["bash", "-c", _SCRIPT, str(h.ROOT), *call], env=h.clean_base_env(),
                          capture_output=True, text=True, timeout=timeout)


def claims(token: str) -> dict:
    """The payload of a JWT, unverified (to read what Keycloak put in it)."""
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) of RFC 7636: a 43-character verifier."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class _Forms(HTMLParser):
    """The forms of a page: id (or "") -> (action, {input name: value})."""

    def __init__(self):
        super().__init__()
        self.forms: dict[str, tuple[str, dict[str, str]]] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._current = a.get("id") or ""
            self.forms[self._current] = (html.unescape(a.get("action") or ""), {})
        elif tag == "input" and self._current is not None and a.get("name") and a.get("type") != "submit":
            self.forms[self._current][1][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._current = None


def forms_of(page: str) -> dict[str, tuple[str, dict[str, str]]]:
    parser = _Forms()
    parser.feed(page)
    return parser.forms


def audiences(token: str) -> list[str]:
    """A JWT's `aud` as a list (a single audience may be a string)."""
    aud = claims(token).get("aud", [])
    return [aud] if isinstance(aud, str) else list(aud)


@dataclass
class Keycloak:
    home: Path
    port: int
    ca_file: Path
    start_seconds: float = 0.0

    @property
    def base_url(self) -> str:
        """Where this process reaches Keycloak directly."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def public_url(self) -> str:
        """The base of every URL Keycloak publishes (and so of its issuers)."""
        return f"https://{PUBLIC_HOST}"

    @property
    def connect_to(self) -> str:
        """The CREDEX_OAUTH_TEST_CONNECT_TO entry that sends credex's oauth calls for the public
        name to this server."""
        return f"{PUBLIC_HOST}:443:127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / "keycloak.log"

    def issuer(self, realm: str = REALM) -> str:
        return f"{self.public_url}/realms/{realm}"

    def _endpoint(self, realm: str, name: str) -> str:
        return f"{self.base_url}/realms/{realm}/protocol/openid-connect/{name}"

    def jwks_url(self, realm: str = REALM) -> str:
        return self._endpoint(realm, "certs")

    def token_url(self, realm: str = REALM) -> str:
        return self._endpoint(realm, "token")

    def version(self) -> str:
        return (h.TOOLS / "keycloak" / "version.txt").read_text().strip()

    def gateway_env(self, realm: str = REALM) -> dict[str, str]:
        """What a gateway needs to trust this realm's tokens (docs/KEYCLOAK.md)."""
        return {"CREDEX_JWKS": self.jwks_url(realm), "CREDEX_JWKS_CA_FILE": str(self.ca_file),
                "CREDEX_JWT_ISSUER": self.issuer(realm), "CREDEX_JWT_AUDIENCE": AUDIENCE,
                "CREDEX_JWT_SERVICE_RULE": "client_claim", "CREDEX_JWT_CLIENT_CLAIM": "client_id"}

    # ---- tokens ------------------------------------------------------------------------
    def token_response(self, realm: str = REALM, **form: str) -> dict:
        """POST form to the realm's token endpoint over verified TLS; the JSON answer."""
        import requests

        r = requests.post(self.token_url(realm), data=form, verify=str(self.ca_file), timeout=30)
        if r.status_code != 200:
            raise AssertionError(f"Keycloak token endpoint ({realm}): {r.status_code} {r.text[:300]}")
        return r.json()

    def user_token(self, username: str, *, realm: str = REALM, client_id: str = UI_CLIENT) -> str:
        """A user's access token by the password grant (direct access grant of a test client)."""
        return self.token_response(realm, grant_type="password", client_id=client_id, username=username,
                                   password=PASSWORDS[(realm, username)], scope="openid")["access_token"]

    def authorization_url(self, client_id: str, redirect_uri: str, *, realm: str = REALM, scope: str = "openid",
                          **params: str) -> str:
        """An authorization request at the realm's public authorization endpoint."""
        query = {"client_id": client_id, "response_type": "code", "redirect_uri": redirect_uri, "scope": scope}
        return f"{self.issuer(realm)}/protocol/openid-connect/auth?{urllib.parse.urlencode(query | params)}"

    def direct(self, url: str) -> str:
        """url with Keycloak's public name replaced by the address this process reaches it at
        (what a browser with a hosts entry for keycloak.credex.test would do)."""
        u = urllib.parse.urlsplit(url)
        if u.hostname != PUBLIC_HOST:
            return url
        return urllib.parse.urlunsplit(u._replace(netloc=f"127.0.0.1:{self.port}"))

    def login(self, authorization_url: str, username: str, *, realm: str = REALM, consent: bool = True):
        """What a person does in a browser: open the authorization URL, sign in on Keycloak's
        login page and, when the client asks for consent, accept (or refuse) it. Returns the
        redirect Keycloak finally answers with (its Location, unfollowed), or raises
        AssertionError with what Keycloak showed instead."""
        import requests

        # verify on every request: a session-wide setting loses to REQUESTS_CA_BUNDLE.
        tls = {"verify": str(self.ca_file), "allow_redirects": False, "timeout": 30}
        signed_in = False
        with requests.Session() as browser:
            r = browser.get(self.direct(authorization_url), **tls)
            for _ in range(10):
                if r.status_code in (302, 303):
                    location = urllib.parse.urljoin(r.url, r.headers["location"])
                    if urllib.parse.urlsplit(self.direct(location)).netloc != f"127.0.0.1:{self.port}":
                        return location  # back to the client: a code, or an error answer
                    r = browser.get(self.direct(location), **tls)
                    continue
                assert r.status_code == 200, f"Keycloak answered {r.status_code}: {r.text[:300]}"
                forms = forms_of(r.text)
                if "kc-form-login" in forms and not signed_in:
                    action, _ = forms["kc-form-login"]
                    data = {"username": username, "password": PASSWORDS[(realm, username)], "credentialId": ""}
                    signed_in = True
                else:  # the consent page: its form carries the grant's "code"
                    grant = [f for f in forms.values() if "code" in f[1]]
                    assert grant, f"neither login nor consent page: {r.text[:300]}"
                    action, data = grant[0]
                    data["accept" if consent else "cancel"] = "Yes" if consent else "No"
                r = browser.post(self.direct(urllib.parse.urljoin(r.url, action)), data=data, **tls)
        raise AssertionError(f"no redirect back to the client after 10 steps (last {r.status_code})")

    def service_token(self, client_id: str = "agent-runtime", *, realm: str = REALM) -> str:
        """A confidential client's own access token by the client-credentials grant."""
        return self.token_response(realm, grant_type="client_credentials", client_id=client_id,
                                   client_secret=CLIENT_SECRETS[client_id])["access_token"]


def start(directory: Path, ca) -> Keycloak:
    """Start Keycloak from instance home `directory` with a certificate of `ca` (a
    providers.tls.TestCa); raises RuntimeError with the script's output and the log's tail."""
    if not (h.TOOLS / "keycloak" / "bin" / "kc.sh").exists():
        raise RuntimeError(f"Keycloak is not installed in {h.TOOLS / 'keycloak'}: run scripts/setup keycloak "
                           "(scripts/test runs scripts/setup all unless CREDEX_SKIP_SETUP=1)")
    cert, key = ca.server_cert("keycloak", HOSTS)
    port = h.free_ports(1)[0]
    kc = Keycloak(home=directory, port=port, ca_file=ca.ca_file)
    began = time.monotonic()
    res = run_keycloak_sh("keycloak_start", str(directory), str(port), str(cert), str(key), str(ca.ca_file),
                          kc.public_url, str(START_TIMEOUT), timeout=START_TIMEOUT + 60)
    if res.returncode != 0:
        stop(kc)
        raise RuntimeError(f"keycloak_start failed ({res.returncode}):\n{res.stderr}\n{h.tail(kc.log_path, 40)}")
    kc.start_seconds = time.monotonic() - began
    return kc


def stop(kc: Keycloak) -> None:
    res = run_keycloak_sh("keycloak_stop", str(kc.home), timeout=90)
    if res.returncode != 0:
        raise RuntimeError(f"keycloak_stop failed ({res.returncode}): {res.stderr}")
