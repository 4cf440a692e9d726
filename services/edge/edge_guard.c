/*
 * edge_guard: the browser guardrails as pure decisions, and the one table of the refusals the
 * edge answers itself (HTTP status, reason code, message). Statuses that the error taxonomy has
 * no code of its own for (405, 408, 413, 415, 431) are chosen here and only here; everything
 * the gateway answers keeps cx_code_http_status.
 */
#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "services/edge/edge_internal.h"

static const edge_refusal_info_t edge_refusals[EDGE_R_COUNT_] = {
    [EDGE_R_NONE] = {"none", 200, CX_OK, ""},
    [EDGE_R_CROSS_SITE] = {"cross_site", 403, CX_ERR_BROWSER_DENIED,
                           "cross-site requests are refused"},
    [EDGE_R_SAME_SITE] = {"same_site", 403, CX_ERR_BROWSER_DENIED,
                          "same-site requests are refused"},
    [EDGE_R_ORIGIN] = {"origin", 403, CX_ERR_BROWSER_DENIED, "this origin is not allowed"},
    [EDGE_R_PREFLIGHT] = {"preflight", 403, CX_ERR_BROWSER_DENIED,
                          "OPTIONS is answered only as a CORS preflight from an allowed origin"},
    [EDGE_R_MEDIA_TYPE] = {"media_type", 415, CX_ERR_INVALID_ARGUMENT,
                           "the request body must be application/json"},
    [EDGE_R_BODY_TOO_LARGE] = {"body_too_large", 413, CX_ERR_RESOURCE_EXHAUSTED,
                               "the request body is too large"},
    [EDGE_R_HEADERS_TOO_LARGE] = {"headers_too_large", 431, CX_ERR_RESOURCE_EXHAUSTED,
                                  "the request headers are too large"},
    [EDGE_R_TIMEOUT] = {"timeout", 408, CX_ERR_DEADLINE_EXCEEDED,
                        "the request was not received in time"},
    [EDGE_R_NOT_FOUND] = {"not_found", 404, CX_ERR_NOT_FOUND, "no such route"},
    [EDGE_R_METHOD] = {"method", 405, CX_ERR_UNIMPLEMENTED, "method not allowed on this route"},
    [EDGE_R_UNEXPECTED_BODY] = {"unexpected_body", 400, CX_ERR_INVALID_ARGUMENT,
                                "this route takes no request body"},
    [EDGE_R_FRAMING] = {"framing", 400, CX_ERR_INVALID_ARGUMENT,
                        "ambiguous request framing (Content-Length and Transfer-Encoding)"},
    [EDGE_R_DUPLICATE_HEADER] = {"duplicate_header", 400, CX_ERR_INVALID_ARGUMENT,
                                 "a request header is given more than once"},
    [EDGE_R_UNAUTHENTICATED] = {"unauthenticated", 401, CX_ERR_UNAUTHENTICATED,
                                "an Authorization: Bearer token is required"},
    [EDGE_R_BAD_REQUEST] = {"bad_request", 400, CX_ERR_INVALID_ARGUMENT, "bad request"},
};

const edge_refusal_info_t *edge_refusal(edge_refusal_t r)
{
    if ((unsigned)r >= EDGE_R_COUNT_)
        r = EDGE_R_BAD_REQUEST;
    return &edge_refusals[r];
}

bool edge_origins_parse(const char *list, edge_origins_t *out, cx_error_t *err)
{
    edge_origins_t o = {0};
    const char *p = list != NULL ? list : "";
    while (*p != '\0') {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && p[m - 1] == ' ')
            m--;
        if (m > 0) {
            if (o.n == CX_CONFIG_MAX_ORIGINS || m >= EDGE_ORIGIN_MAX)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "CREDEX_EDGE_ALLOWED_ORIGINS: too many or too long origins");
            memcpy(o.origin[o.n], p, m);
            o.origin[o.n][m] = '\0';
            o.n++;
        }
        p += n;
    }
    *out = o;
    return true;
}

bool edge_origin_allowed(const edge_origins_t *origins, const char *origin)
{
    for (size_t i = 0; origin != NULL && i < origins->n; i++)
        if (strcmp(origins->origin[i], origin) == 0)
            return true;
    return false;
}

edge_refusal_t edge_fetch_site_check(const char *value, bool allow_same_site)
{
    if (value == NULL || strcasecmp(value, "same-origin") == 0 || strcasecmp(value, "none") == 0)
        return EDGE_R_NONE;
    if (strcasecmp(value, "same-site") == 0)
        return allow_same_site ? EDGE_R_NONE : EDGE_R_SAME_SITE;
    return EDGE_R_CROSS_SITE;
}

static const char *skip_ows(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

static bool starts_ci(const char *s, const char *prefix, const char **rest)
{
    size_t n = strlen(prefix);
    if (strncasecmp(s, prefix, n) != 0)
        return false;
    *rest = s + n;
    return true;
}

bool edge_content_type_is_json(const char *value)
{
    const char *p;
    if (value == NULL || !starts_ci(skip_ows(value), "application/json", &p))
        return false;
    p = skip_ows(p);
    if (*p == '\0')
        return true;
    if (*p != ';')
        return false;
    p = skip_ows(p + 1);
    if (!starts_ci(p, "charset", &p))
        return false;
    p = skip_ows(p);
    if (*p != '=')
        return false;
    p = skip_ows(p + 1);
    if (*p == '"') {
        if (!starts_ci(p + 1, "utf-8\"", &p))
            return false;
    } else if (!starts_ci(p, "utf-8", &p)) {
        return false;
    }
    return *skip_ows(p) == '\0';
}

bool edge_bearer_token(const char *value, const char **token, size_t *len)
{
    const char *p;
    if (value == NULL || !starts_ci(value, "bearer", &p) || *p != ' ')
        return false;
    while (*p == ' ')
        p++;
    const char *t = p;
    /* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
    while (isalnum((unsigned char)*p) || (*p != '\0' && strchr("-._~+/", *p) != NULL))
        p++;
    if (p == t)
        return false;
    while (*p == '=')
        p++;
    if (*p != '\0')
        return false;
    *token = t;
    *len = (size_t)(p - t);
    return true;
}
