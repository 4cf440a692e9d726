/*
 * cx_error: the one error taxonomy of credex (docs/DESIGN.md).
 *
 * A cx_error_t is a fixed-size struct filled without allocating (after mongo-c-driver's
 * bson_error_t). Library functions take `cx_error_t *err` last and return false (or NULL) on
 * failure; err may be NULL when the caller does not care. Codes are APPENDED, never renumbered:
 * their numbers are stored in audit events and compared by clients.
 *
 * Each code maps to exactly one gRPC status and one HTTP status, here and nowhere else.
 *
 * A detail (cx_detail_t) says, within a code, which known condition failed, for code that must
 * tell them apart (a JWT with an unknown kid triggers a JWKS refetch; a transport failure may be
 * a timeout or a TLS fault). Code branches on codes and details, never on message text: messages
 * are for people and may be reworded at any time. Details are in-process only: they are not
 * sent over gRPC nor stored; like codes they are appended, never renumbered.
 * Messages are written by credex developers and must never contain credential material; the
 * logger additionally redacts credential-shaped strings (see cx_log.h).
 *
 * Thread-safety: all functions are reentrant.
 */
#ifndef CREDEX_COMMON_ERROR_CX_ERROR_H
#define CREDEX_COMMON_ERROR_CX_ERROR_H

#include <stdbool.h>
#include <stddef.h>

typedef enum cx_code {
    CX_OK = 0,
    CX_ERR_FEATURE_DISABLED = 1,     /* feature toggle off */
    CX_ERR_UNAUTHENTICATED = 2,      /* no/invalid identity (JWT, peer certificate) */
    CX_ERR_PERMISSION_DENIED = 3,    /* authenticated but not allowed */
    CX_ERR_NOT_FOUND = 4,            /* absent, or hidden from a caller without read_metadata */
    CX_ERR_INVALID_ARGUMENT = 5,     /* malformed or out-of-range input */
    CX_ERR_CONFLICT = 6,             /* version mismatch, duplicate, concurrent update */
    CX_ERR_UNAVAILABLE = 7,          /* a dependency is down: fail closed */
    CX_ERR_INTEGRITY = 8,            /* ciphertext/tag/AAD mismatch: tampered or swapped data */
    CX_ERR_BROWSER_DENIED = 9,       /* browser-shaped request to a server-only API */
    CX_ERR_SSRF_BLOCKED = 10,        /* URL fails SSRF validation */
    CX_ERR_RECONSENT_REQUIRED = 11,  /* provider connection needs the user's consent again */
    CX_ERR_INTERNAL = 12,            /* a bug or an impossible state; details only in logs */
    CX_ERR_UNIMPLEMENTED = 13,       /* method not built yet, or unknown method */
    CX_ERR_RESOURCE_EXHAUSTED = 14,  /* a limit was hit (message size, quota) */
    CX_ERR_DEADLINE_EXCEEDED = 15,   /* the call's deadline passed */
    CX_ERR_FAILED_PRECONDITION = 16, /* state does not allow the operation (e.g. revoked) */
    CX_ERR_CANCELLED = 17,           /* the caller went away */
    CX_ERR_RATE_LIMITED = 18,        /* a provider asked us to slow down (its Retry-After) */
    CX_CODE_COUNT_                   /* not a code; keep last */
} cx_code_t;

typedef enum cx_detail {
    CX_DETAIL_NONE = 0,            /* nothing more specific than the code */
    CX_DETAIL_JWT_UNKNOWN_KID = 1, /* the token's kid is not in the key set (cx_jwt) */
    /* cx_http: why an outbound request failed (with CX_ERR_UNAVAILABLE unless said) */
    CX_DETAIL_HTTP_SCHEME = 2,    /* URL scheme not allowed (CX_ERR_INVALID_ARGUMENT before send) */
    CX_DETAIL_HTTP_DNS = 3,       /* the host name does not resolve */
    CX_DETAIL_HTTP_CONNECT = 4,   /* connection refused, no route */
    CX_DETAIL_HTTP_TIMEOUT = 5,   /* no complete answer in time */
    CX_DETAIL_HTTP_TLS = 6,       /* handshake or certificate verification failed */
    CX_DETAIL_HTTP_TOO_BIG = 7,   /* the answer passed its size limit */
    CX_DETAIL_HTTP_TRANSPORT = 8, /* any other transport failure */
    CX_DETAIL_HTTP_STATUS = 9,    /* an answer arrived with a status the caller refuses */
    /* the gateway's caller classification (CX_ERR_UNAUTHENTICATED, docs/IDENTITY.md) */
    CX_DETAIL_TOKEN_NOT_SERVICE = 10,   /* a user's token where a service token belongs */
    CX_DETAIL_TOKEN_NOT_USER = 11,      /* a service token where a user's token belongs */
    CX_DETAIL_TOKEN_KIND_UNKNOWN = 12,  /* the claims fit neither kind (e.g. client claim != azp) */
    CX_DETAIL_TOKEN_PEER_MISMATCH = 13, /* the service token's client is not the mTLS peer */
    CX_DETAIL_COUNT_                    /* not a detail; keep last */
} cx_detail_t;

#define CX_ERROR_MESSAGE_MAX 256

typedef struct cx_error {
    cx_code_t code;
    cx_detail_t detail;                 /* CX_DETAIL_NONE unless set with cx_error_set_detail */
    char message[CX_ERROR_MESSAGE_MAX]; /* NUL-terminated, truncated if longer */
} cx_error_t;

/* Set *err (if err != NULL) and return false, so that `return cx_error_set(err, ...);` reads
 * naturally in bool functions. The detail is CX_DETAIL_NONE. fmt is a printf format; never pass
 * credential material. */
bool cx_error_set(cx_error_t *err, cx_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cx_error_set with a detail (an out-of-range detail becomes CX_DETAIL_NONE). */
bool cx_error_set_detail(cx_error_t *err, cx_code_t code, cx_detail_t detail, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Reset to CX_OK, CX_DETAIL_NONE and an empty message. NULL-safe. */
void cx_error_clear(cx_error_t *err);

/* Copy src to dst, detail included (both may be NULL: then nothing happens). */
void cx_error_copy(cx_error_t *dst, const cx_error_t *src);

/* Snake_case name of a detail, for logs only, e.g. "jwt_unknown_kid"; "none" for
 * CX_DETAIL_NONE and for an out-of-range value. Never NULL. */
const char *cx_detail_name(cx_detail_t detail);

/* Stable snake_case reason code, e.g. "feature_disabled", "integrity_error". Never NULL:
 * an out-of-range value yields "internal". */
const char *cx_code_reason(cx_code_t code);

/* Inverse of cx_code_reason; unknown strings map to CX_ERR_INTERNAL. */
cx_code_t cx_code_from_reason(const char *reason);

/* Canonical gRPC status code number (0..16, as grpc_status_code) for a code. */
int cx_code_grpc_status(cx_code_t code);

/* Best cx code for a gRPC status received without a credex reason (e.g. from the transport). */
cx_code_t cx_code_from_grpc_status(int grpc_status);

/* HTTP status for a code, for the edge's JSON errors. */
int cx_code_http_status(cx_code_t code);

/* The outcome an audit event records for a failure with this code: true for DENIED (the request
 * was refused: unauthenticated, permission_denied, not_found, invalid_argument, browser_denied,
 * failed_precondition, ssrf_blocked, feature_disabled, resource_exhausted), false for FAILED
 * (credex or a dependency could not do what was allowed: unavailable, internal, integrity_error,
 * conflict, deadline_exceeded, ...). CX_OK and out-of-range values: false. This is the one
 * place that mapping lives; every writer of audit events asks here. */
bool cx_code_is_denial(cx_code_t code);

/* True when a downstream credex service answered with a code that says it could not serve
 * (unavailable, deadline_exceeded, internal, unimplemented, unauthenticated: our own mTLS
 * identity refused, a deployment fault; cancelled, resource_exhausted), and for CX_OK and
 * out-of-range values (a failure without a code): the caller then fails closed with
 * CX_ERR_UNAVAILABLE. False for the answers it passes on as they are (permission_denied,
 * not_found, conflict, invalid_argument, ...). The one place this mapping lives. */
bool cx_code_is_dependency_fault(cx_code_t code);

#endif
