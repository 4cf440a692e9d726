"""MCP impersonation mode: a tool server wrapper that calls the provider API as the invoking user.

With USE_IMPERSONATION_TOKENS=true, every tool call first asks credex (Retrieval/Inject) for the
headers that carry the invoking user's own provider token, and only then calls the provider. A
missing connection, a scope the user never granted, a disabled connector, a revoked connection or
a denied check is a refusal from credex, raised as ToolCallRefused before any request reaches the
provider. With the flag off, the static credential path is unchanged: the tool server's configured
secret, retrieved by reference (Retrieval/Retrieve), is the bearer token of every call.

A minimal stand-in for an MCP server's tool dispatch, so that it runs with nothing but the credex
client: JSON lines on stdin, one request per line,
    {"tool": "whoami", "arguments": {}, "user_token": "<the user's on-behalf-of token>"}
and one answer per line on stdout,
    {"ok": true, "result": {...}}  or  {"ok": false, "stage": "credentials", "reason": "not_found", ...}
An MCP SDK server calls ImpersonatingToolServer.call_tool from its tool handler the same way.

Configuration (environment):
    CREDEX_GATEWAY_ADDR, CREDEX_CA_FILE, CREDEX_CERT_FILE, CREDEX_KEY_FILE, CREDEX_SERVICE_TOKEN,
    CREDEX_SERVER_NAME (optional)         the credex client (clients/python/README.md)
    USE_IMPERSONATION_TOKENS              "true": the invoking user's token; else the static secret
    PROVIDER_KEY, PROVIDER_SCOPES         the provider (or CONNECTOR_ID) and the scopes the tools need
    PROVIDER_API_URL                      what the whoami tool GETs: an absolute URL, or a path
                                          joined to the connection's API base URL (Atlassian sites)
    PROVIDER_CA_FILE (optional)           the CA of the provider API, when not the system's
    STATIC_SECRET_REF                     the flag-off credential: a secret holding a bearer token
    MCP_SERVER_ID                         this tool server's id in credex's audit (resource_id)
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

import credex

ENV_FLAG = "USE_IMPERSONATION_TOKENS"


class ToolCallRefused(Exception):
    """No credential for this call: credex said why (reason), and the provider was not called."""

    def __init__(self, reason: str, details: str, correlation_id: str):
        super().__init__(f"{reason}: {details}")
        self.reason, self.details, self.correlation_id = reason, details, correlation_id


def flag_on(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(ENV_FLAG, "false").strip().lower() in ("1", "true", "yes")


class ImpersonatingToolServer:
    """Tool calls with the invoking user's provider token (impersonation on) or the server's static
    secret (off). `http_get(url, headers) -> (status, body)` makes the provider call."""

    def __init__(self, client: credex.Client, *, impersonation: bool, provider: str, scopes: list[str],
                 api_url: str, static_secret_ref: str, server_id: str, connector_id: str = "",
                 http_get: Callable[[str, dict[str, str]], tuple[int, bytes]] | None = None):
        self.client, self.impersonation = client, impersonation
        self.provider, self.scopes, self.connector_id = provider, scopes, connector_id
        self.api_url, self.static_secret_ref = api_url, static_secret_ref
        self.resource = {"resource_type": "mcp_server", "resource_id": server_id}
        self.http_get = http_get or urllib_get()
        self.tools = {"whoami": self._whoami}

    def call_tool(self, name: str, arguments: Mapping, *, user_token: str) -> object:
        """Run tool `name` for the user of `user_token`. Raises ToolCallRefused (no provider request
        made) when credex gives no credential, KeyError for an unknown tool."""
        tool = self.tools[name]
        headers, url = self._credentials(user_token)
        return tool(url, headers, arguments)

    # ---- credentials: decided before the tool runs ----------------------------------------------
    def _credentials(self, user_token: str) -> tuple[dict[str, str], str]:
        try:
            if self.impersonation:
                inj = self.client.inject(self.provider, self.scopes, user_token=user_token,
                                         connector_id=self.connector_id, resource_context=self.resource)
                url = inj.url(self.api_url) if self.api_url.startswith("/") else self.api_url
                return inj.apply({"Accept": "application/json"}), url
            secret = self.client.retrieve(self.static_secret_ref, user_token=user_token,
                                          intended_use="http_authorization_header",
                                          resource_context=self.resource)
            return {"Accept": "application/json", "Authorization": f"Bearer {secret.value.decode()}"}, self.api_url
        except credex.CredexError as e:
            raise ToolCallRefused(e.reason, e.details, e.correlation_id) from None

    # ---- tools -------------------------------------------------------------------------------------
    def _whoami(self, url: str, headers: dict[str, str], arguments: Mapping) -> object:
        status, body = self.http_get(url, headers)
        if status != 200:
            return {"error": f"provider answered {status}"}
        return json.loads(body)


def urllib_get(ca_file: str | None = None) -> Callable[[str, dict[str, str]], tuple[int, bytes]]:
    ctx = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()

    def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        req = urllib.request.Request(url, headers=headers)
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    return get


def main(env: Mapping[str, str] = os.environ) -> int:
    client = credex.Client(env["CREDEX_GATEWAY_ADDR"], env["CREDEX_CA_FILE"], env["CREDEX_CERT_FILE"],
                           env["CREDEX_KEY_FILE"], service_token=env["CREDEX_SERVICE_TOKEN"],
                           server_name=env.get("CREDEX_SERVER_NAME") or None)
    server = ImpersonatingToolServer(
        client, impersonation=flag_on(env), provider=env.get("PROVIDER_KEY", ""),
        connector_id=env.get("CONNECTOR_ID", ""), scopes=env.get("PROVIDER_SCOPES", "").split(),
        api_url=env["PROVIDER_API_URL"], static_secret_ref=env.get("STATIC_SECRET_REF", ""),
        server_id=env.get("MCP_SERVER_ID", "mcp-example"), http_get=urllib_get(env.get("PROVIDER_CA_FILE")))
    with client:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            try:
                out = {"ok": True, "result": server.call_tool(req["tool"], req.get("arguments", {}),
                                                              user_token=req.get("user_token", ""))}
            except ToolCallRefused as e:
                out = {"ok": False, "stage": "credentials", "reason": e.reason, "correlation_id": e.correlation_id}
            print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
