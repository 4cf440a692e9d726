/*
 * oauth: RFC 8414 / OpenID Connect discovery of a custom connector's endpoints (see
 * oauth_internal.h). The document comes from a server an admin named, so it is input like any
 * other: bounded, parsed strictly (duplicate members refused), its issuer compared exactly
 * (a look-alike issuer is the mix-up attack of RFC 9207), every endpoint screened as a
 * connector URL. Messages never quote the document nor a URL.
 *
 * The Content-Type is not judged: the body must be a JSON object, which is what matters, and
 * servers label discovery documents inconsistently.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "services/oauth/oauth_internal.h"

#define DISCOVERY_MAX (64 * 1024) /* bytes of a discovery document */
#define LIST_MAX      64          /* entries read from a *_supported array */
#define OIDC_SUFFIX   "/.well-known/openid-configuration"
#define RFC8414_INFIX "/.well-known/oauth-authorization-server"

/* A string member that is an endpoint: absent (when optional) or a screened connector URL. */
static bool endpoint(json_t *doc, const char *name, bool required, const char *const *allow,
                     char **dst, cx_error_t *err)
{
    json_t *v = json_object_get(doc, name);
    if (!v || json_is_null(v)) {
        if (required)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document has no %s", name);
        return true;
    }
    if (!json_is_string(v))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document: %s is not a string",
                            name);
    cx_error_t e;
    cx_error_clear(&e);
    if (!cx_http_url_check(json_string_value(v), allow, &e))
        return cx_error_set(err, e.code, "discovery document: %s: %s", name, e.message);
    *dst = strdup(json_string_value(v));
    if (!*dst)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return true;
}

/* Does the array member `name` list `want`? *present says whether the member is there. */
static bool lists(json_t *doc, const char *name, const char *want, bool *present, cx_error_t *err,
                  bool *ok)
{
    json_t *v = json_object_get(doc, name);
    *present = v && !json_is_null(v);
    *ok = true;
    if (!*present)
        return false;
    if (!json_is_array(v)) {
        *ok = cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document: %s is not an array",
                           name);
        return false;
    }
    size_t n = json_array_size(v);
    for (size_t i = 0; i < n && i < LIST_MAX; i++) {
        const char *s = json_string_value(json_array_get(v, i));
        if (s && strcmp(s, want) == 0)
            return true;
    }
    return false;
}

static bool parse(const char *issuer, json_t *doc, const char *const *allow, oauth_discovered_t *d,
                  cx_error_t *err)
{
    const char *iss = json_string_value(json_object_get(doc, "issuer"));
    if (!iss)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document has no issuer");
    /* exact: no case folding, no trailing-slash leniency (RFC 8414 3.3, OIDC Discovery 4.3) */
    if (strcmp(iss, issuer) != 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document: issuer mismatch");
    d->issuer = strdup(iss);
    if (!d->issuer)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    if (!endpoint(doc, "authorization_endpoint", true, allow, &d->authorization_url, err) ||
        !endpoint(doc, "token_endpoint", true, allow, &d->token_url, err) ||
        !endpoint(doc, "userinfo_endpoint", false, allow, &d->userinfo_url, err) ||
        !endpoint(doc, "revocation_endpoint", false, allow, &d->revocation_url, err) ||
        !endpoint(doc, "jwks_uri", false, allow, &d->jwks_uri, err))
        return false;

    bool present, ok;
    bool s256 = lists(doc, "code_challenge_methods_supported", "S256", &present, err, &ok);
    if (!ok)
        return false;
    d->pkce_s256 = s256 || !present;
    d->auth_basic = lists(doc, "token_endpoint_auth_methods_supported", "client_secret_basic",
                          &present, err, &ok);
    if (!ok)
        return false;
    if (present) {
        d->auth_post = lists(doc, "token_endpoint_auth_methods_supported", "client_secret_post",
                             &present, err, &ok);
    } else {
        d->auth_basic = true; /* the default of RFC 8414 2 */
        d->auth_post = false;
    }
    json_t *iss_param = json_object_get(doc, "authorization_response_iss_parameter_supported");
    if (iss_param && !json_is_boolean(iss_param) && !json_is_null(iss_param))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "discovery document: authorization_response_iss_parameter_supported "
                            "is not a boolean");
    d->iss_parameter = json_is_true(iss_param);
    return true;
}

bool oauth_discovery_parse(const char *issuer, const char *body, size_t len,
                           const char *const *allow_hosts, oauth_discovered_t *out, cx_error_t *err)
{
    if (!issuer || !*issuer || !out)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "issuer is required");
    if (!body || len == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document is empty");
    if (len > DISCOVERY_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "discovery document is larger than %d bytes", DISCOVERY_MAX);
    json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
    if (!doc || !json_is_object(doc)) {
        json_decref(doc);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "discovery document is not a JSON object");
    }
    oauth_discovered_t d;
    memset(&d, 0, sizeof(d));
    bool ok = parse(issuer, doc, allow_hosts, &d, err);
    json_decref(doc);
    if (!ok) {
        oauth_discovered_clear(&d);
        return false;
    }
    *out = d;
    return true;
}

/* The discovery URL of issuer: OIDC Discovery 4 appends the suffix to the issuer (without its
 * trailing slash); RFC 8414 3.1 inserts the well-known segment between the host and the
 * issuer's path (without a terminating slash). */
static bool discovery_url(const char *issuer, bool oidc, char *out, size_t n, cx_error_t *err)
{
    size_t len = strlen(issuer);
    if (strncmp(issuer, "https://", 8) != 0 || strpbrk(issuer, "?#") ||
        strcspn(issuer + 8, "/") == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "issuer must be an https URL with a host and without query or "
                            "fragment");
    while (len > 8 && issuer[len - 1] == '/')
        len--;
    const char *path = issuer + 8 + strcspn(issuer + 8, "/");
    size_t authority = (size_t)(path - issuer);
    if (authority > len)
        authority = len;
    int w;
    if (oidc)
        w = snprintf(out, n, "%.*s%s", (int)len, issuer, OIDC_SUFFIX);
    else
        w = snprintf(out, n, "%.*s%s%.*s", (int)authority, issuer, RFC8414_INFIX,
                     (int)(len - authority), issuer + authority);
    if (w < 0 || (size_t)w >= n)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "issuer is too long");
    return true;
}

bool oauth_discover(cx_http_t *http, const char *issuer, bool oidc, const char *const *allow_hosts,
                    oauth_discovered_t *out, cx_error_t *err)
{
    if (!http || !issuer || !*issuer || !out)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "issuer is required");
    char url[CX_HTTP_URL_MAX + 1];
    if (!discovery_url(issuer, oidc, url, sizeof(url), err))
        return false;
    const cx_http_header_t accept = {"accept", "application/json"};
    cx_http_request_t rq = {.method = "GET", .url = url, .headers = &accept, .nheaders = 1};
    cx_http_response_t r;
    cx_error_t e;
    cx_error_clear(&e);
    if (!cx_http_do(http, &rq, &r, &e))
        return cx_error_set_detail(err, e.code, e.detail, "discovery: %s", e.message);
    bool ok = false;
    if (r.status != 200) {
        /* 4xx: the issuer is wrong or has no document (the admin's to fix); else the server's */
        cx_error_set_detail(
            err, r.status >= 400 && r.status < 500 ? CX_ERR_INVALID_ARGUMENT : CX_ERR_UNAVAILABLE,
            CX_DETAIL_HTTP_STATUS, "discovery document answered HTTP %ld", r.status);
        goto out;
    }
    oauth_discovered_t d;
    if (!oauth_discovery_parse(issuer, r.body, r.body_len, allow_hosts, &d, err))
        goto out;
    if (oidc && !d.jwks_uri) {
        oauth_discovered_clear(&d);
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "discovery document has no jwks_uri");
        goto out;
    }
    *out = d;
    ok = true;
out:
    cx_http_response_free(&r);
    return ok;
}

void oauth_discovered_clear(oauth_discovered_t *d)
{
    if (!d)
        return;
    free(d->issuer);
    free(d->authorization_url);
    free(d->token_url);
    free(d->userinfo_url);
    free(d->revocation_url);
    free(d->jwks_uri);
    memset(d, 0, sizeof(*d));
}
