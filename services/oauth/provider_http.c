/*
 * oauth provider calls of a connection (see oauth_internal.h): the token request, the account's
 * identity and resources, the id_token of OIDC connectors, and revocation. Every request goes
 * through the provider client (common/http under the SSRF policy); every provider difference
 * comes from the connector or its descriptor (providers.c). Token material is wiped as soon as
 * it is parsed and never appears in a message, a log line or an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/jwt/cx_jwt.h"
#include "common/log/cx_log.h"
#include "credex/v1/store.pb-c.h"
#include "services/oauth/oauth_internal.h"

#define OAUTH_UA           "credex-oauth"
#define OAUTH_ERROR_MAX    64 /* a provider's error code as named in messages */
#define OAUTH_SECRET_USE   "oauth_client_auth"
#define OAUTH_JWT_LEEWAY_S 60

bool oauth_endpoints_of(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_endpoints_t *out,
                        cx_error_t *err)
{
    const Credex__V1__ConnectorEndpoints *e = c->endpoints;
    memset(out, 0, sizeof(*out));
    out->authorization_url = e->authorization_url;
    out->token_url = e->token_url;
    out->userinfo_url = e->userinfo_url;
    out->revocation_url = e->revocation_url;
    out->jwks_uri = "";
    out->issuer = "";
    out->scope_separator = " ";
    if (c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN) {
        const oauth_provider_t *p = oauth_provider_find(c->provider_key);
        if (!p)
            return cx_error_set(err, CX_ERR_INTEGRITY, "stored connector names no built-in");
        out->pkce = p->pkce_s256;
        out->accept_json = p->token_accept_json;
        out->scope_separator = p->scope_separator;
        out->resources_url = p->resources_url;
        return true;
    }
    out->pkce = true;
    out->accept_json = true;
    out->oidc = c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC;
    if (!e->issuer_url[0])
        return true;
    out->issuer = e->issuer_url;
    oauth_discovered_t d;
    memset(&d, 0, sizeof(d));
    if (!oauth_discover(x->o->http, e->issuer_url, out->oidc,
                        (const char *const *)x->o->allow_hosts, &d, err))
        return false;
#define OAUTH_FILL(field, from)                                                                    \
    if (!out->field[0] && d.from)                                                                  \
        out->field = oauth_str(x, d.from);
    OAUTH_FILL(authorization_url, authorization_url)
    OAUTH_FILL(token_url, token_url)
    OAUTH_FILL(userinfo_url, userinfo_url)
    OAUTH_FILL(revocation_url, revocation_url)
    OAUTH_FILL(jwks_uri, jwks_uri)
#undef OAUTH_FILL
    out->iss_required = d.iss_parameter;
    oauth_discovered_clear(&d);
    return true;
}

void oauth_tokens_clear(oauth_tokens_t *t)
{
    if (!t)
        return;
    char *v[] = {t->access_token, t->refresh_token, t->id_token};
    for (size_t i = 0; i < 3; i++)
        if (v[i]) {
            cx_crypto_wipe(v[i], strlen(v[i]));
            free(v[i]);
        }
    memset(t, 0, sizeof(*t));
}

Credex__V1__CallerContext *oauth_own_caller(oauth_ctx_t *x, const char *intended_use)
{
    /* oauth itself uses the material (a provider call), for the user of the call: never the
     * browser that started it, which gets no material. */
    Credex__V1__CallerContext *cc = oauth_caller(x, intended_use);
    cc->caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    cc->service_id = oauth_str(x, "oauth");
    return cc;
}

bool oauth_client_secret(oauth_ctx_t *x, const Credex__V1__Connector *c, cx_secret_t **out,
                         cx_error_t *err)
{
    if (!c->client_secret_id[0])
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connector has no client secret");
    Credex__V1__StoreResolveRequest req = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    req.caller = oauth_own_caller(x, OAUTH_SECRET_USE);
    req.secret_id = c->client_secret_id;
    req.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    ProtobufCMessage *reply = NULL;
    if (!oauth_store_call(x, "Resolve", &req.base, &reply, err))
        return false;
    Credex__V1__StoreResolveResponse *r = (Credex__V1__StoreResolveResponse *)reply;
    *out = cx_secret_from(r->value.data, r->value.len);
    cx_crypto_wipe(r->value.data, r->value.len);
    return *out ? true : cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
}

/* ---- requests ----------------------------------------------------------------------------- */

/* ---- form text ------------------------------------------------------------------------- */

static bool oauth_text_reserve(oauth_text_t *t, size_t more)
{
    if (t->failed)
        return false;
    if (t->cap - t->len > more)
        return true;
    size_t cap = t->cap ? t->cap : 256;
    while (cap - t->len <= more) {
        if (cap > SIZE_MAX / 2) {
            t->failed = true;
            return false;
        }
        cap *= 2;
    }
    /* No realloc: the old buffer may hold a secret and must be wiped, not left behind. */
    char *buf = malloc(cap);
    if (!buf) {
        t->failed = true;
        return false;
    }
    if (t->buf) {
        memcpy(buf, t->buf, t->len + 1);
        cx_crypto_wipe(t->buf, t->cap);
        free(t->buf);
    } else {
        buf[0] = '\0';
    }
    t->buf = buf;
    t->cap = cap;
    return true;
}

void oauth_text_encode(oauth_text_t *t, const uint8_t *value, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len > SIZE_MAX / 3 || !oauth_text_reserve(t, 3 * len))
        return;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = value[i];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            (ch != 0 && strchr("-._~", ch))) {
            t->buf[t->len++] = (char)ch;
        } else {
            t->buf[t->len++] = '%';
            t->buf[t->len++] = hex[ch >> 4];
            t->buf[t->len++] = hex[ch & 15];
        }
    }
    t->buf[t->len] = '\0';
}

void oauth_text_raw(oauth_text_t *t, const char *s)
{
    size_t n = strlen(s);
    if (!oauth_text_reserve(t, n))
        return;
    memcpy(t->buf + t->len, s, n + 1);
    t->len += n;
}

void oauth_text_field(oauth_text_t *t, const char *name, const char *value)
{
    if (t->len)
        oauth_text_raw(t, "&");
    oauth_text_raw(t, name);
    oauth_text_raw(t, "=");
    oauth_text_encode(t, (const uint8_t *)value, strlen(value));
}

bool oauth_text_done(const oauth_text_t *t, const char **out, cx_error_t *err)
{
    if (t->failed)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    *out = t->buf ? t->buf : "";
    return true;
}

void oauth_text_free(oauth_text_t *t)
{
    if (!t)
        return;
    if (t->buf) {
        cx_crypto_wipe(t->buf, t->cap);
        free(t->buf);
    }
    memset(t, 0, sizeof(*t));
}

/* ---- requests ----------------------------------------------------------------------------- */

/* A form body authenticated as the connector: HTTP Basic (header into basic, a malloc'd
 * "Basic ..." wiped when freed) or client_id/client_secret in the body. */
typedef struct oauth_form {
    oauth_text_t body;
    char *basic;
} oauth_form_t;

static void oauth_form_free(oauth_form_t *f)
{
    oauth_text_free(&f->body);
    if (f->basic) {
        cx_crypto_wipe(f->basic, strlen(f->basic));
        free(f->basic);
    }
    memset(f, 0, sizeof(*f));
}

static bool oauth_form_auth(oauth_form_t *f, const char *client_id, oauth_client_auth_t auth,
                            const uint8_t *secret, size_t secret_len, cx_error_t *err)
{
    if (auth == OAUTH_CLIENT_AUTH_POST) {
        oauth_text_field(&f->body, "client_id", client_id);
        oauth_text_raw(&f->body, "&client_secret=");
        oauth_text_encode(&f->body, secret, secret_len);
        return true;
    }
    /* RFC 6749 2.3.1: the id and the secret are form-encoded before they are joined, so that a
     * ':' or a non-ASCII octet in either cannot change where the other begins. */
    oauth_text_t plain = {0};
    const char *joined = "";
    oauth_text_encode(&plain, (const uint8_t *)client_id, strlen(client_id));
    oauth_text_raw(&plain, ":");
    oauth_text_encode(&plain, secret, secret_len);
    if (!oauth_text_done(&plain, &joined, err))
        goto fail;
    f->basic = calloc(1, 6 + 4 * (plain.len / 3 + 1) + 1);
    if (!f->basic) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto fail;
    }
    memcpy(f->basic, "Basic ", 6);
    EVP_EncodeBlock((unsigned char *)f->basic + 6, (const unsigned char *)joined, (int)plain.len);
    oauth_text_free(&plain);
    return true;
fail:
    oauth_text_free(&plain);
    return false;
}

/* POST the form to url; the response body is the caller's (wipe, then free). */
static bool oauth_form_post(oauth_ctx_t *x, const char *url, const oauth_form_t *f,
                            bool accept_json, cx_http_response_t *resp, cx_error_t *err)
{
    cx_http_header_t h[4];
    size_t n = 0;
    h[n++] = (cx_http_header_t){"content-type", "application/x-www-form-urlencoded"};
    h[n++] = (cx_http_header_t){"user-agent", OAUTH_UA};
    if (accept_json)
        h[n++] = (cx_http_header_t){"accept", "application/json"};
    if (f->basic)
        h[n++] = (cx_http_header_t){"authorization", f->basic};
    const char *body = "";
    if (!oauth_text_done(&f->body, &body, err))
        return false;
    cx_http_request_t req = {.method = "POST",
                             .url = url,
                             .headers = h,
                             .nheaders = n,
                             .body = body,
                             .body_len = f->body.len};
    if (!x->o->http)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "the provider client is not available");
    return cx_http_do(x->o->http, &req, resp, err);
}

static void oauth_resp_wipe(cx_http_response_t *resp)
{
    if (resp->body)
        cx_crypto_wipe(resp->body, resp->body_len);
    cx_http_response_free(resp);
}

/* ---- the token answer --------------------------------------------------------------------- */

static int oauth_hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A form-encoded answer (GitHub without Accept: application/json) as a JSON object of strings. */
static json_t *oauth_form_parse(const char *body, size_t len)
{
    json_t *o = json_object();
    char *copy = malloc(len + 1);
    if (!o || !copy) {
        json_decref(o);
        free(copy);
        return NULL;
    }
    memcpy(copy, body, len);
    copy[len] = '\0';
    char *save = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *v = eq + 1, *w = v;
        for (char *r = v; *r; r++) {
            if (*r == '+') {
                *w++ = ' ';
            } else if (*r == '%' && oauth_hexval(r[1]) >= 0 && oauth_hexval(r[2]) >= 0) {
                *w++ = (char)(oauth_hexval(r[1]) * 16 + oauth_hexval(r[2]));
                r += 2;
            } else {
                *w++ = *r;
            }
        }
        *w = '\0';
        json_object_set_new(o, pair, json_string(v));
    }
    cx_crypto_wipe(copy, len);
    free(copy);
    return o;
}

static char *oauth_json_dup(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s && s[0] ? strdup(s) : NULL;
}

static int64_t oauth_json_int(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_string(v)) /* form-encoded answers carry numbers as text */
        return strtoll(json_string_value(v), NULL, 10);
    return 0;
}

/* Wipe the token strings jansson holds before it frees them. */
static void oauth_json_wipe(json_t *o)
{
    static const char *const keys[] = {"access_token", "refresh_token", "id_token"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(o, keys[i]);
        if (json_is_string(v)) {
            char *s = (char *)json_string_value(v);
            cx_crypto_wipe(s, strlen(s));
        }
    }
    json_decref(o);
}

/* The provider's error code, if it is a plain word (else "invalid"): named in messages. */
static void oauth_error_word(const char *in, char out[OAUTH_ERROR_MAX + 1])
{
    size_t n = in ? strlen(in) : 0;
    bool ok = n > 0 && n <= OAUTH_ERROR_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (in[i] >= 'a' && in[i] <= 'z') || (in[i] >= '0' && in[i] <= '9') || in[i] == '_' ||
             in[i] == '.' || in[i] == '-';
    snprintf(out, OAUTH_ERROR_MAX + 1, "%s", ok ? in : "invalid");
}

/* The token endpoint's answer to the form in f (its grant fields added by the caller), f
 * authenticated here as the connector. ans (when not NULL) receives what classification needs;
 * what names the request in messages ("code exchange", "refresh"). */
static bool oauth_token_post(oauth_ctx_t *x, const Credex__V1__Connector *c,
                             oauth_client_auth_t auth, const oauth_endpoints_t *e,
                             const uint8_t *secret, size_t secret_len, oauth_form_t *f,
                             const char *what, oauth_tokens_t *out, oauth_token_answer_t *ans,
                             cx_error_t *err)
{
    cx_http_response_t resp;
    oauth_token_answer_t scratch;
    ans = ans ? ans : &scratch;
    memset(ans, 0, sizeof(*ans));
    ans->retry_after_s = -1;
    if (!e->token_url || !e->token_url[0])
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, "the connector has no token endpoint");
    if (auth == OAUTH_CLIENT_AUTH_BASIC)
        oauth_text_field(&f->body, "client_id", c->client_id);
    if (!oauth_form_auth(f, c->client_id, auth, secret, secret_len, err))
        return false;
    cx_error_t he;
    cx_error_clear(&he);
    if (!oauth_form_post(x, e->token_url, f, e->accept_json, &resp, &he))
        return cx_error_set(err, he.code == CX_ERR_SSRF_BLOCKED ? he.code : CX_ERR_UNAVAILABLE,
                            "the provider's token endpoint did not answer (%s)",
                            cx_code_reason(he.code));
    json_t *o = strstr(resp.content_type, "json")
                    ? json_loadb(resp.body, resp.body_len, JSON_REJECT_DUPLICATES, NULL)
                    : oauth_form_parse(resp.body, resp.body_len);
    long status = resp.status;
    ans->status = status;
    ans->retry_after_s = resp.retry_after_s;
    oauth_resp_wipe(&resp);
    if (!json_is_object(o)) {
        json_decref(o);
        return cx_error_set(err, status >= 500 ? CX_ERR_UNAVAILABLE : CX_ERR_FAILED_PRECONDITION,
                            "the provider's token endpoint gave an unreadable answer (HTTP %ld)",
                            status);
    }
    const char *error = json_string_value(json_object_get(o, "error"));
    if (status != 200 || error) {
        oauth_error_word(error, ans->error);
        if (!error)
            snprintf(ans->error, sizeof(ans->error), "none");
        cx_error_set(err, status >= 500 ? CX_ERR_UNAVAILABLE : CX_ERR_FAILED_PRECONDITION,
                     "the provider refused the %s (HTTP %ld, error %s)", what, status, ans->error);
        oauth_json_wipe(o);
        return false;
    }
    memset(out, 0, sizeof(*out));
    out->access_token = oauth_json_dup(o, "access_token");
    out->refresh_token = oauth_json_dup(o, "refresh_token");
    out->id_token = oauth_json_dup(o, "id_token");
    snprintf(out->token_type, sizeof(out->token_type), "%s",
             json_string_value(json_object_get(o, "token_type"))
                 ? json_string_value(json_object_get(o, "token_type"))
                 : "Bearer");
    out->expires_in_s = oauth_json_int(o, "expires_in");
    out->refresh_expires_in_s = oauth_json_int(o, "refresh_token_expires_in");
    const char *scope = json_string_value(json_object_get(o, "scope"));
    snprintf(out->scope, sizeof(out->scope), "%s", scope ? scope : "");
    oauth_json_wipe(o);
    if (!out->access_token) {
        oauth_tokens_clear(out);
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the provider's token answer has no access_token");
    }
    return true;
}

bool oauth_token_exchange(oauth_ctx_t *x, const Credex__V1__Connector *c,
                          const oauth_client_auth_t auth, const oauth_endpoints_t *e,
                          const uint8_t *secret, size_t secret_len, const char *redirect_uri,
                          const char *code, const char *verifier, oauth_tokens_t *out,
                          cx_error_t *err)
{
    oauth_form_t f = {0};
    oauth_text_field(&f.body, "grant_type", "authorization_code");
    oauth_text_field(&f.body, "code", code);
    oauth_text_field(&f.body, "redirect_uri", redirect_uri);
    if (verifier[0])
        oauth_text_field(&f.body, "code_verifier", verifier);
    bool ok =
        oauth_token_post(x, c, auth, e, secret, secret_len, &f, "code exchange", out, NULL, err);
    oauth_form_free(&f);
    return ok;
}

bool oauth_token_refresh(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_client_auth_t auth,
                         const oauth_endpoints_t *e, const uint8_t *secret, size_t secret_len,
                         const uint8_t *refresh_token, size_t refresh_len, oauth_tokens_t *out,
                         oauth_token_answer_t *ans, cx_error_t *err)
{
    oauth_form_t f = {0};
    oauth_text_field(&f.body, "grant_type", "refresh_token");
    oauth_text_raw(&f.body, "&refresh_token=");
    oauth_text_encode(&f.body, refresh_token, refresh_len);
    bool ok = oauth_token_post(x, c, auth, e, secret, secret_len, &f, "refresh", out, ans, err);
    oauth_form_free(&f);
    return ok;
}

/* ---- refresh failures (pure) ----------------------------------------------------------------- */

oauth_refresh_class_t oauth_refresh_classify(cx_code_t code, const oauth_token_answer_t *a)
{
    if (code == CX_OK)
        return OAUTH_REFRESH_OK;
    if (a->status == 429 || (a->status == 503 && a->retry_after_s >= 0))
        return OAUTH_REFRESH_RATE_LIMITED;
    if (a->status == 0) /* no answer, or refused before asking (no endpoint, SSRF policy) */
        return code == CX_ERR_UNAVAILABLE ? OAUTH_REFRESH_UNAVAILABLE : OAUTH_REFRESH_REFUSED;
    if (a->status >= 500)
        return OAUTH_REFRESH_UNAVAILABLE;
    /* RFC 6749 5.2; GitHub says bad_refresh_token (with HTTP 200) for a used, expired or
     * revoked one. */
    if (strcmp(a->error, "invalid_grant") == 0 || strcmp(a->error, "bad_refresh_token") == 0)
        return OAUTH_REFRESH_REVOKED;
    if (strcmp(a->error, "invalid_scope") == 0)
        return OAUTH_REFRESH_SCOPE;
    return OAUTH_REFRESH_REFUSED;
}

int64_t oauth_retry_until(int64_t now_ms, int64_t retry_after_s)
{
    int64_t s = retry_after_s < 0 ? OAUTH_RETRY_DEFAULT_S : retry_after_s;
    if (s > OAUTH_RETRY_MAX_S)
        s = OAUTH_RETRY_MAX_S;
    return now_ms + s * 1000;
}

/* ---- identity ------------------------------------------------------------------------------ */

/* GET url with the access token; the JSON answer. */
static bool oauth_bearer_get(oauth_ctx_t *x, const char *url, const char *access_token,
                             json_t **out, cx_error_t *err)
{
    size_t alen = strlen(access_token) + 8;
    char *auth = malloc(alen);
    if (!auth)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    snprintf(auth, alen, "Bearer %s", access_token);
    cx_http_header_t h[] = {
        {"authorization", auth}, {"accept", "application/json"}, {"user-agent", OAUTH_UA}};
    cx_http_request_t req = {.method = "GET", .url = url, .headers = h, .nheaders = 3};
    cx_http_response_t resp;
    cx_error_t he;
    cx_error_clear(&he);
    bool got = x->o->http && cx_http_do(x->o->http, &req, &resp, &he);
    cx_crypto_wipe(auth, alen);
    free(auth);
    if (!got)
        return cx_error_set(err, he.code == CX_ERR_SSRF_BLOCKED ? he.code : CX_ERR_UNAVAILABLE,
                            "the provider's identity endpoint did not answer");
    long status = resp.status;
    json_t *o = status == 200 ? json_loadb(resp.body, resp.body_len, 0, NULL) : NULL;
    cx_http_response_free(&resp);
    if (!o)
        return cx_error_set(err, status >= 500 ? CX_ERR_UNAVAILABLE : CX_ERR_FAILED_PRECONDITION,
                            "the provider's identity endpoint refused the token (HTTP %ld)",
                            status);
    *out = o;
    return true;
}

/* The value at a dotted path ("user.id") as text: strings as they are, integers in decimal. */
static char *oauth_json_path(oauth_ctx_t *x, json_t *o, const char *path)
{
    char seg[128];
    const char *p = path;
    while (o && *p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        if (n >= sizeof(seg))
            return NULL;
        memcpy(seg, p, n);
        seg[n] = '\0';
        o = json_object_get(o, seg);
        p += n + (dot ? 1 : 0);
    }
    if (json_is_string(o) && json_string_value(o)[0] && strlen(json_string_value(o)) <= 256)
        return oauth_str(x, json_string_value(o));
    if (json_is_integer(o)) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(o));
        return oauth_str(x, buf);
    }
    return NULL;
}

bool oauth_identify(oauth_ctx_t *x, const Credex__V1__Connector *c, const oauth_endpoints_t *e,
                    const char *access_token, char **id, char **name, char **res, size_t *nres,
                    cx_error_t *err)
{
    *nres = 0;
    *id = *name = NULL;
    if (e->userinfo_url && e->userinfo_url[0]) {
        json_t *o = NULL;
        if (!oauth_bearer_get(x, e->userinfo_url, access_token, &o, err))
            return false;
        const Credex__V1__AccountMapping *m = c->account_mapping;
        *id = oauth_json_path(x, o, m->account_id_field[0] ? m->account_id_field : "sub");
        *name = oauth_json_path(x, o, m->account_name_field[0] ? m->account_name_field : "name");
        json_decref(o);
    }
    if (e->resources_url) {
        json_t *a = NULL;
        if (!oauth_bearer_get(x, e->resources_url, access_token, &a, err))
            return false;
        for (size_t i = 0; json_is_array(a) && i < json_array_size(a); i++) {
            char *rid = oauth_json_path(x, json_array_get(a, i), "id");
            if (rid && *nres < OAUTH_RESOURCES_MAX)
                res[(*nres)++] = rid;
        }
        json_decref(a);
    }
    return true;
}

/* ---- id_token ------------------------------------------------------------------------------ */

bool oauth_id_token_verify(oauth_ctx_t *x, const oauth_endpoints_t *e, const char *client_id,
                           const char *nonce, const char *id_token, char **sub, cx_error_t *err)
{
    static const char refused[] = "the provider's id_token failed verification";
    if (!id_token || !e->jwks_uri[0] || !e->issuer[0])
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            !id_token ? "the provider's token answer has no id_token"
                                      : "the provider's issuer or JWKS is unknown");
    cx_http_header_t h[] = {{"accept", "application/json"}, {"user-agent", OAUTH_UA}};
    cx_http_request_t req = {.method = "GET", .url = e->jwks_uri, .headers = h, .nheaders = 2};
    cx_http_response_t resp;
    cx_error_t he;
    cx_error_clear(&he);
    if (!x->o->http || !cx_http_do(x->o->http, &req, &resp, &he))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "the provider's JWKS could not be fetched");
    cx_jwks_t *jwks = resp.status == 200 ? cx_jwt_jwks_parse(resp.body, resp.body_len, &he) : NULL;
    cx_http_response_free(&resp);
    if (!jwks)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "the provider's JWKS is unusable");
    cx_jwt_params_t p = {
        .issuer = e->issuer, .audience = client_id, .leeway_s = OAUTH_JWT_LEEWAY_S};
    cx_jwt_claims_t claims;
    size_t len = strlen(id_token);
    bool ok = cx_jwt_verify_with_jwks(jwks, &p, id_token, len, (int64_t)time(NULL), &claims, &he);
    cx_jwt_jwks_free(jwks);
    if (!ok)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, refused);
    /* The signature held: the payload is the provider's; cx_jwt does not read nonce. */
    const char *dot1 = strchr(id_token, '.');
    const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
    unsigned char *payload = dot2 ? malloc(len) : NULL;
    size_t plen = 0;
    json_t *o = NULL;
    if (payload && cx_jwt_b64url_decode(dot1 + 1, (size_t)(dot2 - dot1 - 1), payload, len, &plen))
        o = json_loadb((const char *)payload, plen, JSON_REJECT_DUPLICATES, NULL);
    if (payload) {
        cx_crypto_wipe(payload, len);
        free(payload);
    }
    const char *got = json_string_value(json_object_get(o, "nonce"));
    ok = got && nonce[0] && strcmp(got, nonce) == 0;
    json_decref(o);
    if (!ok)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION, refused);
    *sub = oauth_str(x, claims.sub);
    return true;
}

/* ---- revocation ---------------------------------------------------------------------------- */

bool oauth_revoke(oauth_ctx_t *x, const Credex__V1__Connector *c, oauth_client_auth_t auth,
                  const oauth_endpoints_t *e, const uint8_t *secret, size_t secret_len,
                  const char *token, const char *hint, cx_error_t *err)
{
    oauth_form_t f = {0};
    cx_http_response_t resp;
    oauth_text_field(&f.body, "token", token);
    oauth_text_field(&f.body, "token_type_hint", hint);
    bool ok = oauth_form_auth(&f, c->client_id, auth, secret, secret_len, err) &&
              oauth_form_post(x, e->revocation_url, &f, true, &resp, err);
    oauth_form_free(&f);
    if (!ok)
        return false;
    long status = resp.status;
    oauth_resp_wipe(&resp);
    if (status != 200)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "the provider's revocation endpoint answered HTTP %ld", status);
    return true;
}

/* ---- the token endpoint's reachability (TestConnector) -------------------------------------- */

#define OAUTH_TEST_CODE "credex-connector-test" /* an authorization code no provider issued */

bool oauth_token_probe(oauth_ctx_t *x, const Credex__V1__Connector *c, const char *token_url,
                       long *status, cx_error_t *err)
{
    oauth_form_t f = {0};
    cx_http_response_t resp;
    oauth_text_field(&f.body, "grant_type", "authorization_code");
    oauth_text_field(&f.body, "code", OAUTH_TEST_CODE);
    oauth_text_field(&f.body, "redirect_uri", c->redirect_uri);
    oauth_text_field(&f.body, "client_id", c->client_id);
    bool ok = oauth_form_post(x, token_url, &f, true, &resp, err);
    oauth_form_free(&f);
    if (!ok)
        return false;
    *status = resp.status;
    oauth_resp_wipe(&resp);
    return true;
}
