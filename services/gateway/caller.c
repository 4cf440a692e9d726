/*
 * Caller classification, exactly as docs/IDENTITY.md fixes it:
 *   BROWSER                    peer `edge` with x-credex-caller not "service", or a user token
 *                              without a service JWT (session-only auth), or any browser marker
 *                              (Origin, Cookie, Sec-Fetch-*, Referer, a browser User-Agent);
 *   SERVICE                    a valid service token whose client is the mTLS peer, no user
 *                              token;
 *   SERVICE_ON_BEHALF_OF_USER  the same plus a valid user token (the user is its sub).
 * Service tokens and user tokens are told apart by their claims (gateway_token_kind), so that a
 * user's on-behalf-of token (azp = the service) never passes for the service's own token, nor a
 * service token for a user's.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "services/gateway/gateway_internal.h"

bool gateway_id_valid(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '@' || c == '+' || c == '-';
        if (!ok || n + 1 >= GATEWAY_ID_MAX)
            return false;
    }
    return true;
}

static void copy_id(char *dst, const char *src)
{
    /* Callers validated the length with gateway_id_valid; bounded anyway. */
    size_t n = strnlen(src, GATEWAY_ID_MAX - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void set_unauthenticated(gateway_caller_t *out, const cx_error_t *cause, cx_detail_t detail,
                                const char *what)
{
    out->authenticated = false;
    if (cause && cause->code == CX_ERR_UNAVAILABLE) {
        /* The JWKS could not be fetched: we could not judge the token, so fail closed as a
         * dependency fault rather than telling the caller its token is bad. */
        cx_error_copy(&out->auth_err, cause);
        return;
    }
    cx_error_set_detail(&out->auth_err, CX_ERR_UNAUTHENTICATED, detail, "%s", what);
}

gateway_token_kind_t gateway_token_kind(cx_jwt_service_rule_t rule, const cx_jwt_claims_t *c,
                                        const char **client)
{
    const char *id;
    if (rule == CX_JWT_RULE_SUB_IS_CLIENT) {
        /* RFC 9068: the client is azp, or client_id where azp is absent; both present must
         * agree. A client-credentials token is the client's own: sub is the client id. */
        if (c->azp[0] && c->client[0] && strcmp(c->azp, c->client) != 0)
            return GATEWAY_TOKEN_UNKNOWN;
        id = c->azp[0] ? c->azp : c->client;
        if (!id[0])
            return GATEWAY_TOKEN_UNKNOWN;
        if (strcmp(c->sub, id) != 0)
            return GATEWAY_TOKEN_USER;
    } else {
        /* Keycloak: the client claim is written into client-credentials tokens only, naming the
         * client the token was issued to, which is also azp. */
        if (!c->client[0])
            return GATEWAY_TOKEN_USER;
        if (!c->azp[0] || strcmp(c->client, c->azp) != 0)
            return GATEWAY_TOKEN_UNKNOWN;
        id = c->azp;
    }
    if (client)
        *client = id;
    return GATEWAY_TOKEN_SERVICE;
}

/* The user of a verified user token (browser, or on-behalf-of a service); false, with out
 * marked unauthenticated, when the token was rejected, is not a user token, or its subject is
 * not usable. */
static bool accept_user(gateway_caller_t *out, const gateway_caller_facts_t *f)
{
    if (!f->user_token_ok || !f->user_claims) {
        set_unauthenticated(out, &f->user_token_err, CX_DETAIL_NONE, "user token rejected");
        return false;
    }
    gateway_token_kind_t k = gateway_token_kind(f->rule, f->user_claims, NULL);
    if (k != GATEWAY_TOKEN_USER) {
        set_unauthenticated(out, NULL,
                            k == GATEWAY_TOKEN_SERVICE ? CX_DETAIL_TOKEN_NOT_USER
                                                       : CX_DETAIL_TOKEN_KIND_UNKNOWN,
                            "the user token is not a user's token");
        return false;
    }
    if (!gateway_id_valid(f->user_claims->sub)) {
        set_unauthenticated(out, NULL, CX_DETAIL_NONE, "user token subject is not usable");
        return false;
    }
    copy_id(out->user_id, f->user_claims->sub);
    return true;
}

/* The service of a verified service token bound to the peer; false, with out marked
 * unauthenticated, otherwise. */
static bool accept_service(gateway_caller_t *out, const gateway_caller_facts_t *f)
{
    if (!f->service_token_ok || !f->service_claims) {
        set_unauthenticated(out, &f->service_token_err, CX_DETAIL_NONE, "service token rejected");
        return false;
    }
    const char *client = NULL;
    gateway_token_kind_t k = gateway_token_kind(f->rule, f->service_claims, &client);
    if (k != GATEWAY_TOKEN_SERVICE) {
        set_unauthenticated(out, NULL,
                            k == GATEWAY_TOKEN_USER ? CX_DETAIL_TOKEN_NOT_SERVICE
                                                    : CX_DETAIL_TOKEN_KIND_UNKNOWN,
                            "the service token is not a service's own token");
        return false;
    }
    /* A service token is bound to the connection it arrives on: one stolen from another
     * service is useless without that service's certificate too. */
    if (!f->peer || strcmp(client, f->peer) != 0 || !gateway_id_valid(client)) {
        set_unauthenticated(out, NULL, CX_DETAIL_TOKEN_PEER_MISMATCH,
                            "service token is not bound to this peer");
        return false;
    }
    copy_id(out->service_id, client);
    return true;
}

void gateway_caller_classify(const gateway_caller_facts_t *f, gateway_caller_t *out)
{
    memset(out, 0, sizeof(*out));
    if (f->peer && strlen(f->peer) < sizeof(out->peer))
        strcpy(out->peer, f->peer);

    /* 1. The kind, from transport and markers only. x-credex-caller is trusted only from the
     *    edge; from anyone, "browser" can only make things stricter, so it is honoured. */
    bool from_edge = f->peer && strcmp(f->peer, "edge") == 0;
    bool browser = f->browser_marker;
    if (from_edge && (!f->x_caller || strcmp(f->x_caller, "service") != 0))
        browser = true;
    if (f->x_caller && strcasecmp(f->x_caller, "service") != 0)
        browser = true;
    if (!f->has_service_token && f->has_user_token)
        browser = true; /* session-only auth */

    if (browser)
        out->kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    else if (f->has_service_token && f->has_user_token)
        out->kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    else if (f->has_service_token)
        out->kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    else
        out->kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_UNSPECIFIED;

    /* 2. Authentication for that kind. */
    if (out->kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_UNSPECIFIED) {
        set_unauthenticated(out, NULL, CX_DETAIL_NONE,
                            "no credentials: a user token or a service JWT is required");
        return;
    }
    if (out->kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER) {
        /* A browser acts only as its user; a service JWT it might carry adds nothing. */
        if (!f->has_user_token) {
            set_unauthenticated(out, NULL, CX_DETAIL_NONE, "a user token is required");
            return;
        }
        out->authenticated = accept_user(out, f);
        return;
    }
    if (!accept_service(out, f))
        return;
    if (out->kind == CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER &&
        !accept_user(out, f))
        return;
    out->authenticated = true;
}

/* The bearer token of an authorization header, or NULL when it is not "Bearer <token>". */
static const char *bearer_token(const char *h)
{
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

static bool verify_token(const gateway_t *gw, const char *tok, cx_jwt_claims_t *claims,
                         cx_error_t *err)
{
    if (!tok)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "malformed authorization header");
    if (!gw->jwt)
        return cx_error_set(err, CX_ERR_UNAUTHENTICATED, "token verification is not configured");
    return cx_jwt_verify(gw->jwt, tok, strlen(tok), claims, err);
}

bool gateway_user_agent_is_browser(const char *ua)
{
    if (!ua)
        return false;
    /* Product tokens only (RFC 9110 section 10.1.5): text inside parentheses is a comment. */
    unsigned depth = 0;
    for (const char *p = ua; *p; p++) {
        if (*p == '(')
            depth++;
        else if (*p == ')' && depth > 0)
            depth--;
        else if (depth == 0 && (p == ua || p[-1] == ' ' || p[-1] == '\t') &&
                 strncasecmp(p, "mozilla/", 8) == 0)
            return true;
    }
    return false;
}

/* The request headers the classification reads, looked up in one pass: the browser markers
 * (presence is enough) first. */
enum {
    H_MARKERS = 7, /* origin .. referer */
    H_USER_AGENT = H_MARKERS,
    H_X_CALLER,
    H_AUTHORIZATION,
    H_USER_TOKEN,
    H_COUNT
};
static const char *const caller_headers[H_COUNT] = {"origin",
                                                    "cookie",
                                                    "sec-fetch-site",
                                                    "sec-fetch-mode",
                                                    "sec-fetch-dest",
                                                    "sec-fetch-user",
                                                    "referer",
                                                    "user-agent",
                                                    "x-credex-caller",
                                                    "authorization",
                                                    "x-credex-user-token"};

void gateway_caller_from_call(const gateway_t *gw, rpc_call_t *call, gateway_caller_t *out)
{
    const char *h[H_COUNT];
    gateway_caller_facts_t f;
    memset(&f, 0, sizeof(f));
    cx_jwt_claims_t sc, uc;
    f.peer = rpc_call_peer(call);
    f.rule = gw->cfg ? gw->cfg->jwt_service_rule : CX_JWT_RULE_CLIENT_CLAIM;
    rpc_call_headers(call, caller_headers, H_COUNT, h);
    f.x_caller = h[H_X_CALLER];
    for (size_t i = 0; i < H_MARKERS; i++)
        if (h[i])
            f.browser_marker = true;
    if (gateway_user_agent_is_browser(h[H_USER_AGENT]))
        f.browser_marker = true;
    const char *authz = h[H_AUTHORIZATION];
    const char *ut = h[H_USER_TOKEN];
    if (authz) {
        f.has_service_token = true;
        f.service_token_ok = verify_token(gw, bearer_token(authz), &sc, &f.service_token_err);
        f.service_claims = f.service_token_ok ? &sc : NULL;
    }
    if (ut) {
        f.has_user_token = true;
        f.user_token_ok = verify_token(gw, ut, &uc, &f.user_token_err);
        f.user_claims = f.user_token_ok ? &uc : NULL;
    }
    gateway_caller_classify(&f, out);
}
