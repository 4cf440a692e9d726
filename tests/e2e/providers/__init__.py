"""Provider test servers of the credex black-box tests: GitHub, Atlassian, Webex, PagerDuty,
GitLab (gitlab.com and a self-managed gitlab.example.test) and a generic OAuth 2.0 / OIDC
provider, each a real HTTPS server on 127.0.0.1 with a certificate from a test CA made at test
time, plus a canary listener that must never be reached.

    sims = ProviderSims(tmp_dir).start()
    env = sims.env()          # CREDEX_OAUTH_TEST_CONNECT_TO and CREDEX_OAUTH_CA_FILE for oauth
    sims.github.register_client("cid", "secret", ("https://credex.example.test/cb",))
    sims.generic.new_tenant() # a fresh issuer https://idp.credex.test/t/<id>
    sims.request("https://api.github.com/user", headers={...})   # as credex would, for the sims' tests
    sims.stop()

credex reaches them by their real host names: CREDEX_OAUTH_TEST_CONNECT_TO maps each
host:443 to 127.0.0.1:<port> (like curl --connect-to) and TLS is verified for the host name
against CREDEX_OAUTH_CA_FILE. The canary is deliberately not in the mapping.
"""

from __future__ import annotations

import http.client
import socket
import urllib.parse
from pathlib import Path

from .builtin import Atlassian, GitHub, GitLab, PagerDuty, Webex, authorization_redirect
from .generic import GenericOidc
from .server import Canary, Fault, Reply, Request, SimServer, User, pkce_s256
from .tls import TestCa

GENERIC_HOSTS = ["idp.credex.test", "idp2.credex.test", "evil-issuer.credex.test"]
WRONG_ISSUER_HOST = "evil-issuer.credex.test"
SELF_MANAGED_GITLAB = "gitlab.example.test"


class ProviderSims:
    """Every provider test server of a session, and the canary."""

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.ca = TestCa(self.dir / "ca")
        self.github = GitHub(self.ca)
        self.atlassian = Atlassian(self.ca)
        self.webex = Webex(self.ca)
        self.pagerduty = PagerDuty(self.ca)
        self.gitlab = GitLab(self.ca)
        self.gitlab_self = GitLab(self.ca, SELF_MANAGED_GITLAB)
        self.generic = GenericOidc(self.ca, GENERIC_HOSTS, wrong_issuer_hosts=(WRONG_ISSUER_HOST,))
        self.canary = Canary()
        self._started: list = []

    @property
    def servers(self) -> list[SimServer]:
        return [self.github, self.atlassian, self.webex, self.pagerduty, self.gitlab, self.gitlab_self,
                self.generic]

    def by_provider_key(self, key: str) -> SimServer:
        return {"github": self.github, "atlassian": self.atlassian, "webex": self.webex,
                "pagerduty": self.pagerduty, "gitlab": self.gitlab}[key]

    def start(self) -> "ProviderSims":
        try:
            for s in [*self.servers, self.canary]:
                s.start()
                self._started.append(s)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        while self._started:
            self._started.pop().stop()

    # -- what credex is given --------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        return self.ca.ca_file

    def connect_to(self) -> str:
        """The CREDEX_OAUTH_TEST_CONNECT_TO value: host:443:127.0.0.1:<port> for every host."""
        return ",".join(e for s in self.servers for e in s.connect_to())

    def env(self) -> dict[str, str]:
        return {"CREDEX_OAUTH_TEST_CONNECT_TO": self.connect_to(), "CREDEX_OAUTH_CA_FILE": str(self.ca_file)}

    def port_of(self, host: str) -> int:
        for s in self.servers:
            if host in s.hosts:
                return s.port
        raise KeyError(host)

    def canary_url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.canary.port}{path}"

    # -- a client that reaches the sims the way credex does (for the sims' own tests) ------------
    def request(self, url: str, method: str = "GET", *, headers: dict[str, str] | None = None,
                body: bytes | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        """One HTTPS request to a sim by its real URL: connected to 127.0.0.1:<port of the host>,
        TLS verified for the host against the test CA. (status, lower-case headers, body)."""
        u = urllib.parse.urlsplit(url)
        assert u.scheme == "https" and u.hostname, url
        conn = _PinnedHTTPS(u.hostname, self.port_of(u.hostname), self.ca.client_context(), timeout)
        try:
            path = (u.path or "/") + (f"?{u.query}" if u.query else "")
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def consent(self, authorization_url: str) -> dict[str, str]:
        """What a browser does with an authorization URL: GET it at the provider, which consents
        as its current user and redirects back; the redirect's query (code and state, or error)."""
        status, headers, body = self.request(authorization_url)
        assert status == 302, f"authorization endpoint answered {status}: {body[:200]!r}"
        return authorization_redirect(headers["location"])


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:port with SNI, certificate name and Host header of `host`."""

    def __init__(self, host: str, port: int, context, timeout: float):
        super().__init__(host, 443, timeout=timeout, context=context)
        self._pinned_port = port

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self._pinned_port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


__all__ = ["ProviderSims", "TestCa", "Fault", "Reply", "Request", "User", "Canary", "GitHub", "Atlassian",
           "Webex", "PagerDuty", "GitLab", "GenericOidc", "pkce_s256", "authorization_redirect",
           "GENERIC_HOSTS", "WRONG_ISSUER_HOST", "SELF_MANAGED_GITLAB"]
