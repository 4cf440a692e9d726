"""The credex client: Retrieval over mutually-authenticated TLS, as a server-side caller.

Identity (docs/IDENTITY.md): the client certificate names the caller
(spiffe://<trust domain>/<name>); the service token (`authorization: Bearer`) is the caller's own
client-credentials JWT, whose client id must equal that name; a user token
(`x-credex-user-token`) makes the call one on behalf of that user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from credex.errors import from_rpc_error
from credex.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

USER_AGENT = "credex-python/0.1"
ISSUED_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"  # RFC 8693
MIN_VALID_FOR_MAX_S = 3600.0  # the gateway's bound on min_valid_for


@dataclass(frozen=True)
class ResourceContext:
    """The platform resource that will use the credential (recorded in credex's audit)."""
    resource_type: str
    resource_id: str
    agent_id: str = ""
    provider_resource_id: str = ""  # e.g. an Atlassian cloud id
    attributes: Mapping[str, str] = field(default_factory=dict)

    def to_proto(self) -> common_pb2.ResourceContext:
        return common_pb2.ResourceContext(resource_type=self.resource_type, resource_id=self.resource_id,
                                          agent_id=self.agent_id, provider_resource_id=self.provider_resource_id,
                                          attributes=dict(self.attributes))


class _Material:
    """Holds credential material; its repr and str never show it."""
    __slots__ = ()
    _hidden: tuple[str, ...] = ()

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__ if n not in self._hidden)
        return f"{type(self).__name__}({shown}, {'/'.join(self._hidden)}=<hidden>)"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError(f"{type(self).__name__} holds credential material and is not picklable")


class Secret(_Material):
    """A retrieved secret. `value` is the material: do not log or persist it."""
    __slots__ = ("secret_id", "version", "kind", "value", "correlation_id")
    _hidden = ("value",)

    def __init__(self, secret_id: str, version: int, kind: str, value: bytes, correlation_id: str):
        self.secret_id, self.version, self.kind = secret_id, version, kind
        self.value, self.correlation_id = value, correlation_id


class ProviderToken(_Material):
    """A user's provider access token from Exchange (never a refresh token). `material` is the
    token: do not log or persist it. `issued_token_type` is RFC 8693's access-token type."""
    __slots__ = ("connection_id", "provider_key", "token_type", "material", "expires_at_ms", "scopes",
                 "provider_account_id", "provider_resource_id", "issued_token_type", "correlation_id")
    _hidden = ("material",)

    def __init__(self, reply: gateway_pb2.ExchangeResponse, correlation_id: str):
        self.connection_id, self.provider_key = reply.connection_id, reply.provider_key
        self.token_type, self.material = reply.token_type, reply.material
        self.expires_at_ms, self.scopes = reply.expires_at_ms, tuple(reply.scopes)
        self.provider_account_id = reply.provider_account_id
        self.provider_resource_id = reply.provider_resource_id
        self.issued_token_type = reply.issued_token_type or ISSUED_TOKEN_TYPE
        self.correlation_id = correlation_id

    def authorization(self) -> str:
        """The Authorization header value: "<token_type> <token>" (credential material)."""
        return f"{self.token_type or 'Bearer'} {self.material.decode()}"


class Injection(_Material):
    """What a proxy adds to one provider call made for the user (Inject): `headers` (name ->
    value, credential material: add them to the one outbound request, never log or store them)
    and `api_base_url`, where the provider's API lives for this connection (the Atlassian site's,
    by its cloud id; "" when the provider has no fixed base)."""
    __slots__ = ("connection_id", "provider_key", "headers", "api_base_url", "expires_at_ms",
                 "provider_account_id", "provider_resource_id", "correlation_id")
    _hidden = ("headers",)

    def __init__(self, reply: gateway_pb2.InjectResponse, correlation_id: str):
        self.connection_id, self.provider_key = reply.connection_id, reply.provider_key
        self.headers = {h.name: h.value.decode() for h in reply.headers}
        self.api_base_url, self.expires_at_ms = reply.api_base_url, reply.expires_at_ms
        self.provider_account_id = reply.provider_account_id
        self.provider_resource_id = reply.provider_resource_id
        self.correlation_id = correlation_id

    def apply(self, headers: MutableMapping[str, str]) -> MutableMapping[str, str]:
        """Set the injected headers on a request's header mapping (a dict, requests' headers),
        replacing any header of the same name in any letter case; returns `headers`."""
        names = {n.lower() for n in self.headers}
        for k in [k for k in headers if k.lower() in names]:
            del headers[k]
        headers.update(self.headers)
        return headers

    def url(self, path: str) -> str:
        """api_base_url joined with `path` (which starts with "/"). ValueError when the provider
        has no fixed API base."""
        if not self.api_base_url:
            raise ValueError(f"provider {self.provider_key!r} has no fixed API base URL")
        return self.api_base_url.rstrip("/") + "/" + path.lstrip("/")


def _kind_name(kind: int) -> str:
    name = common_pb2.SecretKind.Name(kind) if kind in common_pb2.SecretKind.values() else "SECRET_KIND_UNSPECIFIED"
    return name.removeprefix("SECRET_KIND_").lower()


def _resource(ctx: ResourceContext | Mapping | None) -> common_pb2.ResourceContext | None:
    if ctx is None:
        return None
    if isinstance(ctx, ResourceContext):
        return ctx.to_proto()
    return ResourceContext(**ctx).to_proto()


class Client:
    """One mTLS channel to the gateway. Thread-safe (grpcio channels are); close() when done, or
    use it as a context manager.

    target        "host:port" of the gateway
    ca_file       the credex CA (PEM) that issued the gateway's certificate
    cert_file, key_file   this caller's certificate and key (PEM) from the same CA
    service_token this caller's service JWT, or a callable returning the current one (called per
                  request, so a runtime can refresh its client-credentials token)
    server_name   the DNS name to verify in the gateway's certificate when it differs from the
                  target's host (the dev stack's gateway certificate names localhost and 127.0.0.1)
    timeout       default deadline of each call, seconds
    """

    def __init__(self, target: str, ca_file: str | Path, cert_file: str | Path, key_file: str | Path, *,
                 service_token: str | Callable[[], str], server_name: str | None = None,
                 timeout: float = 10.0, options: Iterable[tuple[str, object]] = ()):
        creds = grpc.ssl_channel_credentials(root_certificates=Path(ca_file).read_bytes(),
                                             private_key=Path(key_file).read_bytes(),
                                             certificate_chain=Path(cert_file).read_bytes())
        opts = [("grpc.primary_user_agent", USER_AGENT)]
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        self._channel = grpc.secure_channel(target, creds, options=opts + list(options))
        self._retrieval = gateway_pb2_grpc.RetrievalStub(self._channel)
        self._service_token = service_token
        self._timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<gateway channel>)"

    # ---- calls ----------------------------------------------------------------------------

    def retrieve(self, secret_ref: str, *, user_token: str | None, intended_use: str,
                 resource_context: ResourceContext | Mapping, timeout: float | None = None,
                 correlation_id: str | None = None) -> Secret:
        """The current value of secret `secret_ref`, for the user of `user_token` (None: the
        service acting for itself, which needs its own grant on the secret). Raises CredexError."""
        req = gateway_pb2.RetrieveRequest(secret_ref=secret_ref, intended_use=intended_use,
                                          resource_context=_resource(resource_context))
        reply, cid = self._call(self._retrieval.Retrieve, req, user_token, timeout, correlation_id)
        return Secret(reply.secret_id, reply.version, _kind_name(reply.kind), reply.value, cid)

    def exchange(self, provider: str, scopes: Iterable[str] = (), *, user_token: str,
                 resource_context: ResourceContext | Mapping, intended_use: str = "mcp_impersonation",
                 connector_id: str = "", connection_id: str = "", min_valid_for: float = 0,
                 timeout: float | None = None, correlation_id: str | None = None) -> ProviderToken:
        """The user's access token at `provider` (a provider key such as "github"; or "" with
        connector_id or connection_id), granted at least `scopes` (never widened: a scope the user
        did not grant raises ReconsentRequired), valid for at least `min_valid_for` seconds (0:
        the gateway's default, 60 s; at most 3600). Needs the user's token: a service acting for
        itself is refused. Raises CredexError."""
        req = self._exchange_request(provider, scopes, resource_context, intended_use, connector_id,
                                     connection_id, min_valid_for)
        reply, cid = self._call(self._retrieval.Exchange, req, user_token, timeout, correlation_id)
        return ProviderToken(reply, cid)

    def inject(self, provider: str, scopes: Iterable[str] = (), *, user_token: str,
               resource_context: ResourceContext | Mapping, intended_use: str = "mcp_impersonation",
               connector_id: str = "", connection_id: str = "", min_valid_for: float = 0,
               timeout: float | None = None, correlation_id: str | None = None) -> Injection:
        """The headers a proxy adds to one provider call for the user, and the provider's API base
        URL for the connection. Same arguments, checks and errors as exchange()."""
        req = self._exchange_request(provider, scopes, resource_context, intended_use, connector_id,
                                     connection_id, min_valid_for)
        reply, cid = self._call(self._retrieval.Inject, req, user_token, timeout, correlation_id)
        return Injection(reply, cid)

    # ---- internals ------------------------------------------------------------------------

    @staticmethod
    def _exchange_request(provider, scopes, resource_context, intended_use, connector_id, connection_id,
                          min_valid_for):
        if isinstance(scopes, str):
            raise TypeError("scopes is a list of scope strings, not one string")
        if not 0 <= min_valid_for <= MIN_VALID_FOR_MAX_S:
            raise ValueError("min_valid_for is seconds within 0..3600")
        return gateway_pb2.ExchangeRequest(provider_key=provider, connector_id=connector_id,
                                           connection_id=connection_id, intended_use=intended_use,
                                           resource_context=_resource(resource_context),
                                           required_scopes=list(scopes),
                                           min_valid_for_ms=int(min_valid_for * 1000))

    def _call(self, method, request, user_token, timeout, correlation_id):
        service_token = self._service_token() if callable(self._service_token) else self._service_token
        cid = correlation_id or uuid.uuid4().hex
        md = [("authorization", f"Bearer {service_token}"), ("x-correlation-id", cid)]
        if user_token:
            md.append(("x-credex-user-token", user_token))
        try:
            reply, call = method.with_call(request, timeout=timeout if timeout is not None else self._timeout,
                                           metadata=md)
        except grpc.RpcError as err:
            # from None: the grpc error's own repr holds nothing secret, but the chain is noise.
            raise from_rpc_error(err, cid, (service_token, user_token or "")) from None
        echoed = next((v for k, v in (call.initial_metadata() or ()) if k == "x-correlation-id"), cid)
        return reply, echoed
