/*
 * cx_error: reason codes and their gRPC / HTTP mappings, kept in one table so that a new code
 * cannot be added without deciding all three (the static assertion below enforces the size).
 */
#include "common/error/cx_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Canonical gRPC status numbers (grpc/status.h). Spelled out here because only common/rpc may
 * include gRPC headers; the values are part of the gRPC wire protocol and never change. */
enum {
    GRPC_OK_ = 0,
    GRPC_CANCELLED_ = 1,
    GRPC_UNKNOWN_ = 2,
    GRPC_INVALID_ARGUMENT_ = 3,
    GRPC_DEADLINE_EXCEEDED_ = 4,
    GRPC_NOT_FOUND_ = 5,
    GRPC_ALREADY_EXISTS_ = 6,
    GRPC_PERMISSION_DENIED_ = 7,
    GRPC_RESOURCE_EXHAUSTED_ = 8,
    GRPC_FAILED_PRECONDITION_ = 9,
    GRPC_ABORTED_ = 10,
    GRPC_OUT_OF_RANGE_ = 11,
    GRPC_UNIMPLEMENTED_ = 12,
    GRPC_INTERNAL_ = 13,
    GRPC_UNAVAILABLE_ = 14,
    GRPC_DATA_LOSS_ = 15,
    GRPC_UNAUTHENTICATED_ = 16,
    GRPC_STATUS_COUNT_
};

typedef struct cx_code_info {
    const char *reason; /* stable: stored in audit events and sent as the credex-reason trailer */
    int grpc;
    int http;
    bool denial; /* audit outcome DENIED (true) or FAILED (false), see cx_code_is_denial */
} cx_code_info_t;

/*
 * The one mapping table (docs/STYLE.md rule 4).
 *
 * code                 reason               gRPC                    HTTP  audit outcome
 * CX_OK                ok                   0  OK                   200   -
 * FEATURE_DISABLED     feature_disabled     9  FAILED_PRECONDITION  404   DENIED
 * UNAUTHENTICATED      unauthenticated      16 UNAUTHENTICATED      401   DENIED
 * PERMISSION_DENIED    permission_denied    7  PERMISSION_DENIED    403   DENIED
 * NOT_FOUND            not_found            5  NOT_FOUND            404   DENIED
 * INVALID_ARGUMENT     invalid_argument     3  INVALID_ARGUMENT     400   DENIED
 * CONFLICT             conflict             10 ABORTED              409   FAILED
 * UNAVAILABLE          unavailable          14 UNAVAILABLE          503   FAILED
 * INTEGRITY            integrity_error      15 DATA_LOSS            500   FAILED
 * BROWSER_DENIED       browser_denied       7  PERMISSION_DENIED    403   DENIED
 * SSRF_BLOCKED         ssrf_blocked         3  INVALID_ARGUMENT     400   DENIED
 * RECONSENT_REQUIRED   reconsent_required   9  FAILED_PRECONDITION  409   FAILED
 * INTERNAL             internal             13 INTERNAL             500   FAILED
 * UNIMPLEMENTED        unimplemented        12 UNIMPLEMENTED        501   FAILED
 * RESOURCE_EXHAUSTED   resource_exhausted   8  RESOURCE_EXHAUSTED   429   DENIED
 * DEADLINE_EXCEEDED    deadline_exceeded    4  DEADLINE_EXCEEDED    504   FAILED
 * FAILED_PRECONDITION  failed_precondition  9  FAILED_PRECONDITION  412   DENIED
 * CANCELLED            cancelled            1  CANCELLED            499   FAILED
 * RATE_LIMITED         rate_limited         8  RESOURCE_EXHAUSTED   429   FAILED
 *
 * Why these choices:
 *  - feature_disabled is not UNIMPLEMENTED (12): that status already means "unknown method",
 *    and a client must be able to tell "turn the toggle on" from "wrong endpoint". The method
 *    exists, the deployment's state forbids it: FAILED_PRECONDITION. Over HTTP it is 404
 *    because, with the toggle off, the feature must not be exposed at all
 *    (docs/REQUIREMENTS.md, security rule 1); the JSON body still carries "feature_disabled" so
 *    the UI can tell it from a real 404.
 *  - browser_denied is a permission decision about the caller, like permission_denied.
 *  - ssrf_blocked: the URL the caller supplied is unacceptable, i.e. a bad argument.
 *  - integrity_error is DATA_LOSS: stored ciphertext is unusable. HTTP has nothing closer
 *    than 500 and the details stay in the logs.
 *  - reconsent_required: the connection exists but is in a state that needs user action;
 *    409 tells the UI to restart the consent flow rather than retry.
 *  - resource_exhausted 429 rather than 413: most limits are quotas and rates; oversized
 *    bodies are rejected by the HTTP layer itself before a code is chosen.
 *  - cancelled 499 (nginx's "client closed request"): nobody reads it, but it must not be
 *    counted as a server error.
 *  - rate_limited is a provider's limit, not credex's (resource_exhausted): the caller did
 *    nothing wrong and may retry after the time the message and the connection give, so it
 *    is FAILED; it shares RESOURCE_EXHAUSTED and 429 with resource_exhausted, and the
 *    credex-reason trailer tells them apart.
 *  - audit outcome: DENIED when credex refused the request because of who asked, what was asked
 *    or the state it asked about (the caller can change something and succeed); FAILED when the
 *    request was acceptable and credex or a dependency could not carry it out. conflict is
 *    FAILED: a lost race on a version is not a refusal of the caller. reconsent_required is
 *    FAILED: the caller was allowed; the provider connection broke.
 */
static const cx_code_info_t cx_code_table[] = {
    [CX_OK] = {"ok", GRPC_OK_, 200, false},
    [CX_ERR_FEATURE_DISABLED] = {"feature_disabled", GRPC_FAILED_PRECONDITION_, 404, true},
    [CX_ERR_UNAUTHENTICATED] = {"unauthenticated", GRPC_UNAUTHENTICATED_, 401, true},
    [CX_ERR_PERMISSION_DENIED] = {"permission_denied", GRPC_PERMISSION_DENIED_, 403, true},
    [CX_ERR_NOT_FOUND] = {"not_found", GRPC_NOT_FOUND_, 404, true},
    [CX_ERR_INVALID_ARGUMENT] = {"invalid_argument", GRPC_INVALID_ARGUMENT_, 400, true},
    [CX_ERR_CONFLICT] = {"conflict", GRPC_ABORTED_, 409, false},
    [CX_ERR_UNAVAILABLE] = {"unavailable", GRPC_UNAVAILABLE_, 503, false},
    [CX_ERR_INTEGRITY] = {"integrity_error", GRPC_DATA_LOSS_, 500, false},
    [CX_ERR_BROWSER_DENIED] = {"browser_denied", GRPC_PERMISSION_DENIED_, 403, true},
    [CX_ERR_SSRF_BLOCKED] = {"ssrf_blocked", GRPC_INVALID_ARGUMENT_, 400, true},
    [CX_ERR_RECONSENT_REQUIRED] = {"reconsent_required", GRPC_FAILED_PRECONDITION_, 409, false},
    [CX_ERR_INTERNAL] = {"internal", GRPC_INTERNAL_, 500, false},
    [CX_ERR_UNIMPLEMENTED] = {"unimplemented", GRPC_UNIMPLEMENTED_, 501, false},
    [CX_ERR_RESOURCE_EXHAUSTED] = {"resource_exhausted", GRPC_RESOURCE_EXHAUSTED_, 429, true},
    [CX_ERR_DEADLINE_EXCEEDED] = {"deadline_exceeded", GRPC_DEADLINE_EXCEEDED_, 504, false},
    [CX_ERR_FAILED_PRECONDITION] = {"failed_precondition", GRPC_FAILED_PRECONDITION_, 412, true},
    [CX_ERR_CANCELLED] = {"cancelled", GRPC_CANCELLED_, 499, false},
    [CX_ERR_RATE_LIMITED] = {"rate_limited", GRPC_RESOURCE_EXHAUSTED_, 429, false},
};

_Static_assert(sizeof(cx_code_table) / sizeof(cx_code_table[0]) == CX_CODE_COUNT_,
               "every cx_code_t needs a row in cx_code_table");

/* A status received without a credex-reason trailer comes from the transport or a peer that
 * is not credex; map it to the closest code so that callers branch on one enum. Statuses with
 * no credex counterpart collapse onto the code a caller would handle the same way. */
static const cx_code_t cx_code_from_grpc_table[] = {
    [GRPC_OK_] = CX_OK,
    [GRPC_CANCELLED_] = CX_ERR_CANCELLED,
    [GRPC_UNKNOWN_] = CX_ERR_INTERNAL,
    [GRPC_INVALID_ARGUMENT_] = CX_ERR_INVALID_ARGUMENT,
    [GRPC_DEADLINE_EXCEEDED_] = CX_ERR_DEADLINE_EXCEEDED,
    [GRPC_NOT_FOUND_] = CX_ERR_NOT_FOUND,
    [GRPC_ALREADY_EXISTS_] = CX_ERR_CONFLICT,
    [GRPC_PERMISSION_DENIED_] = CX_ERR_PERMISSION_DENIED,
    [GRPC_RESOURCE_EXHAUSTED_] = CX_ERR_RESOURCE_EXHAUSTED,
    [GRPC_FAILED_PRECONDITION_] = CX_ERR_FAILED_PRECONDITION,
    [GRPC_ABORTED_] = CX_ERR_CONFLICT,
    [GRPC_OUT_OF_RANGE_] = CX_ERR_INVALID_ARGUMENT,
    [GRPC_UNIMPLEMENTED_] = CX_ERR_UNIMPLEMENTED,
    [GRPC_INTERNAL_] = CX_ERR_INTERNAL,
    [GRPC_UNAVAILABLE_] = CX_ERR_UNAVAILABLE,
    [GRPC_DATA_LOSS_] = CX_ERR_INTEGRITY,
    [GRPC_UNAUTHENTICATED_] = CX_ERR_UNAUTHENTICATED,
};

_Static_assert(sizeof(cx_code_from_grpc_table) / sizeof(cx_code_from_grpc_table[0]) ==
                   GRPC_STATUS_COUNT_,
               "every canonical gRPC status needs a row in cx_code_from_grpc_table");

/* The enum's underlying type is implementation-defined, so compare as unsigned: a negative
 * value becomes huge and fails the same test. */
static bool cx_code_valid(cx_code_t code)
{
    return (unsigned)code < (unsigned)CX_CODE_COUNT_;
}

static bool cx_detail_valid(cx_detail_t detail)
{
    return (unsigned)detail < (unsigned)CX_DETAIL_COUNT_;
}

/* The format attribute lets clang's -Wformat-nonliteral (in -Wformat=2) see that fmt is the
 * checked format of the public setters. */
__attribute__((format(printf, 4, 0))) static void
cx_error_vset(cx_error_t *err, cx_code_t code, cx_detail_t detail, const char *fmt, va_list ap)
{
    err->code = cx_code_valid(code) ? code : CX_ERR_INTERNAL;
    err->detail = cx_detail_valid(detail) ? detail : CX_DETAIL_NONE;
    err->message[0] = '\0';
    /* Truncation is the documented behaviour; the result length is not needed. */
    if (fmt != NULL)
        (void)vsnprintf(err->message, sizeof(err->message), fmt, ap);
}

bool cx_error_set(cx_error_t *err, cx_code_t code, const char *fmt, ...)
{
    if (err == NULL)
        return false;
    va_list ap;
    va_start(ap, fmt);
    cx_error_vset(err, code, CX_DETAIL_NONE, fmt, ap);
    va_end(ap);
    return false;
}

bool cx_error_set_detail(cx_error_t *err, cx_code_t code, cx_detail_t detail, const char *fmt, ...)
{
    if (err == NULL)
        return false;
    va_list ap;
    va_start(ap, fmt);
    cx_error_vset(err, code, detail, fmt, ap);
    va_end(ap);
    return false;
}

void cx_error_clear(cx_error_t *err)
{
    if (err == NULL)
        return;
    err->code = CX_OK;
    err->detail = CX_DETAIL_NONE;
    memset(err->message, 0, sizeof(err->message));
}

void cx_error_copy(cx_error_t *dst, const cx_error_t *src)
{
    if (dst == NULL || src == NULL || dst == src)
        return;
    dst->code = cx_code_valid(src->code) ? src->code : CX_ERR_INTERNAL;
    dst->detail = cx_detail_valid(src->detail) ? src->detail : CX_DETAIL_NONE;
    memcpy(dst->message, src->message, sizeof(dst->message));
    /* src may have been filled by hand; never hand on an unterminated string. */
    dst->message[sizeof(dst->message) - 1] = '\0';
}

const char *cx_code_reason(cx_code_t code)
{
    if (!cx_code_valid(code))
        return cx_code_table[CX_ERR_INTERNAL].reason;
    return cx_code_table[code].reason;
}

cx_code_t cx_code_from_reason(const char *reason)
{
    if (reason == NULL)
        return CX_ERR_INTERNAL;
    for (size_t i = 0; i < sizeof(cx_code_table) / sizeof(cx_code_table[0]); i++) {
        if (strcmp(cx_code_table[i].reason, reason) == 0)
            return (cx_code_t)i;
    }
    return CX_ERR_INTERNAL;
}

int cx_code_grpc_status(cx_code_t code)
{
    if (!cx_code_valid(code))
        return cx_code_table[CX_ERR_INTERNAL].grpc;
    return cx_code_table[code].grpc;
}

cx_code_t cx_code_from_grpc_status(int grpc_status)
{
    if (grpc_status < 0 || grpc_status >= GRPC_STATUS_COUNT_)
        return CX_ERR_INTERNAL;
    return cx_code_from_grpc_table[grpc_status];
}

int cx_code_http_status(cx_code_t code)
{
    if (!cx_code_valid(code))
        return cx_code_table[CX_ERR_INTERNAL].http;
    return cx_code_table[code].http;
}

bool cx_code_is_denial(cx_code_t code)
{
    return cx_code_valid(code) && cx_code_table[code].denial;
}

bool cx_code_is_dependency_fault(cx_code_t code)
{
    switch (code) {
    case CX_ERR_UNAVAILABLE:
    case CX_ERR_DEADLINE_EXCEEDED:
    case CX_ERR_INTERNAL:
    case CX_ERR_UNIMPLEMENTED:
    case CX_ERR_UNAUTHENTICATED:
    case CX_ERR_CANCELLED:
    case CX_ERR_RESOURCE_EXHAUSTED:
    case CX_OK:
        return true;
    default:
        return !cx_code_valid(code);
    }
}

/* Names for logs only: details never travel or get stored, so these may change with the code. */
static const char *const cx_detail_names[] = {
    [CX_DETAIL_NONE] = "none",
    [CX_DETAIL_JWT_UNKNOWN_KID] = "jwt_unknown_kid",
    [CX_DETAIL_HTTP_SCHEME] = "http_scheme",
    [CX_DETAIL_HTTP_DNS] = "http_dns",
    [CX_DETAIL_HTTP_CONNECT] = "http_connect",
    [CX_DETAIL_HTTP_TIMEOUT] = "http_timeout",
    [CX_DETAIL_HTTP_TLS] = "http_tls",
    [CX_DETAIL_HTTP_TOO_BIG] = "http_too_big",
    [CX_DETAIL_HTTP_TRANSPORT] = "http_transport",
    [CX_DETAIL_HTTP_STATUS] = "http_status",
    [CX_DETAIL_TOKEN_NOT_SERVICE] = "token_not_service",
    [CX_DETAIL_TOKEN_NOT_USER] = "token_not_user",
    [CX_DETAIL_TOKEN_KIND_UNKNOWN] = "token_kind_unknown",
    [CX_DETAIL_TOKEN_PEER_MISMATCH] = "token_peer_mismatch",
};

_Static_assert(sizeof(cx_detail_names) / sizeof(cx_detail_names[0]) == CX_DETAIL_COUNT_,
               "every cx_detail_t needs a name");

const char *cx_detail_name(cx_detail_t detail)
{
    return cx_detail_valid(detail) ? cx_detail_names[detail] : cx_detail_names[CX_DETAIL_NONE];
}
