"""Failed calls as exceptions carrying credex's reason code.

The gateway ends a failed call with a gRPC status and the trailing-metadata entry
`credex-reason` (common.proto). When that entry is missing (the call never reached credex: a
dead address, a TLS failure, a deadline spent in the network), the reason is derived from the
gRPC status code and `from_server` is False.
"""

from __future__ import annotations

import grpc

REASON_KEY = "credex-reason"

# The reasons a transport-level status stands for when no credex-reason came back.
_REASON_OF_CODE = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.UNIMPLEMENTED: "unimplemented",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.CANCELLED: "cancelled",
    grpc.StatusCode.UNAUTHENTICATED: "unauthenticated",
    grpc.StatusCode.PERMISSION_DENIED: "permission_denied",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_argument",
    grpc.StatusCode.FAILED_PRECONDITION: "failed_precondition",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
    grpc.StatusCode.ALREADY_EXISTS: "conflict",
    grpc.StatusCode.ABORTED: "conflict",
}


class CredexError(Exception):
    """A failed credex call.

    reason          the credex reason code ("permission_denied", "not_found", ...)
    code            the grpc.StatusCode
    correlation_id  the x-correlation-id the call carried (find it in credex's audit and logs)
    details         the server's human-readable message (never credential material)
    from_server     False when the reason was derived from the status code alone
    """

    def __init__(self, reason: str, code: grpc.StatusCode, details: str, correlation_id: str,
                 from_server: bool = True):
        self.reason = reason
        self.code = code
        self.details = details
        self.correlation_id = correlation_id
        self.from_server = from_server
        super().__init__(f"{reason} ({code.name}): {details} [correlation id {correlation_id}]")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, code={self.code.name}, " \
               f"correlation_id={self.correlation_id!r})"


class Unauthenticated(CredexError):
    """A service or user token is missing, invalid, expired, or in the wrong slot."""


class PermissionDenied(CredexError):
    """The user or the service lacks the permission (or the service is not an allowed retriever)."""


class NotFound(CredexError):
    """No such object, or the caller may not know it exists."""


class InvalidArgument(CredexError):
    """The request broke the input contract; the message names the field, never the value."""


class FailedPrecondition(CredexError):
    """The object is in the wrong state (revoked secret, intended use not allowed, ...)."""


class Unavailable(CredexError):
    """credex or one of its dependencies is down; credex fails closed. Retrying later may work."""


class DeadlineExceeded(CredexError):
    """The call's deadline passed."""


class BrowserDenied(CredexError):
    """The call looked browser-shaped; credential material never goes to browsers."""


class FeatureDisabled(CredexError):
    """The feature is switched off in this deployment (e.g. CREDENTIAL_EXCHANGE_ENABLED=false)."""


class Unimplemented(CredexError):
    """The gateway does not implement this method (yet)."""


class ReconsentRequired(CredexError):
    """The user must reconnect the provider to grant the scopes asked for."""


class RateLimited(CredexError):
    """The provider rate-limited credex's refresh; the message says when to retry (the
    connection's refresh_retry_after_ms holds the instant)."""


_CLASS_OF_REASON = {
    "unauthenticated": Unauthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "invalid_argument": InvalidArgument,
    "failed_precondition": FailedPrecondition,
    "unavailable": Unavailable,
    "deadline_exceeded": DeadlineExceeded,
    "browser_denied": BrowserDenied,
    "feature_disabled": FeatureDisabled,
    "unimplemented": Unimplemented,
    "reconsent_required": ReconsentRequired,
    "rate_limited": RateLimited,
}


def from_rpc_error(err: grpc.RpcError, correlation_id: str, secrets: tuple[str, ...] = ()) -> CredexError:
    """The CredexError for a failed call. `secrets` are strings (the tokens the call sent) that
    are cut out of the server's message should it ever contain one."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else "") or ""
    for s in secrets:
        if s:
            details = details.replace(s, "[redacted]")
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    reason = next((v for k, v in (trailers or ()) if k == REASON_KEY), None)
    from_server = reason is not None
    if reason is None:
        reason = _REASON_OF_CODE.get(code, "internal")
    cls = _CLASS_OF_REASON.get(reason, CredexError)
    return cls(reason, code, details, correlation_id, from_server)
