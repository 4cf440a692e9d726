/*
 * oauth: a connector as an admin gives it -> a checked, normalised oauth_connector_t (see
 * oauth_internal.h). Pure: no I/O, no resolution; every URL a credex process will call is
 * screened with cx_http_url_check here, and again at connect time by common/http.
 *
 * Decisions (docs/OAUTH_CONNECTORS.md tells admins):
 *  - built-in connectors take endpoints, account mapping and client authentication from the
 *    descriptor; a value given for one of them must equal the descriptor's (so a stored
 *    connector validates again on update) and anything else is refused rather than ignored.
 *    The one exception is GitLab's base URL, given in endpoints.issuer_url (self-managed).
 *  - authorization_params of a built-in start with the descriptor's (Atlassian's audience and
 *    prompt), which an admin cannot change; extra, non-reserved ones may be added.
 *  - custom connectors authenticate with client_secret_basic: the proto has no field for the
 *    method yet (RFC 6749 2.3.1 makes Basic the one every server must support).
 *  - account field names are dotted paths into the identity reply ("user.id" for PagerDuty).
 *  - a CUSTOM_OIDC connector's scopes include "openid" (default: just "openid").
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "services/oauth/oauth_internal.h"

#define KEY_MAX            32  /* provider_key of a custom connector */
#define DISPLAY_NAME_MAX   128 /* bytes */
#define CLIENT_ID_MAX      255 /* fits oauth_bootstrap_spec_t.client_id */
#define SCOPE_MAX          256 /* bytes of one scope token */
#define SCOPES_IN_MAX      256 /* scope entries read before de-duplication */
#define FIELD_NAME_MAX     128 /* account mapping field path */
#define FIELD_SEGMENTS_MAX 4   /* dots + 1 */
#define PARAM_NAME_MAX     64
#define PARAM_VALUE_MAX    512
#define REFRESH_DEFAULT_MS 300000
#define REFRESH_MIN_MS     1000
#define REFRESH_MAX_MS     (24 * 3600 * 1000)

/* Parameters credex sets itself (RFC 6749 4.1.1, RFC 7636, OIDC Core 3.1.2.1) or whose use
 * would change how the answer comes back (response_mode, request objects). */
static const char *const reserved_params[] = {
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
    "response_mode",
    "request",
    "request_uri",
    "client_secret",
    "code_verifier",
    "code",
    "grant_type",
    NULL,
};

static bool oom(cx_error_t *err)
{
    return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
}

static bool empty(const char *s)
{
    return !s || !*s;
}

static bool set_str(char **dst, const char *src, cx_error_t *err)
{
    char *s = strdup(src ? src : "");
    if (!s)
        return oom(err);
    free(*dst);
    *dst = s;
    return true;
}

/* Bytes 0x21..0x7e only (no space, no control, no non-ASCII). */
static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
            return false;
    return true;
}

/* A connector URL credex calls: cx_http_url_check's verdict, with the field named. */
static bool check_url(const char *field, const char *url, const oauth_validate_env_t *env,
                      cx_error_t *err)
{
    cx_error_t e;
    cx_error_clear(&e);
    if (cx_http_url_check(url, env->allow_hosts, &e))
        return true;
    return cx_error_set(err, e.code, "%s: %s", field, e.message);
}

/* A URL that is an identifier or a base (issuer, GitLab base URL): also no query, no
 * fragment (OpenID Connect Discovery 1.0, 3: the issuer has neither). */
static bool check_base_url(const char *field, const char *url, const oauth_validate_env_t *env,
                           cx_error_t *err)
{
    if (!check_url(field, url, env, err))
        return false;
    if (strpbrk(url, "?#"))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: must have no query or fragment",
                            field);
    return true;
}

static bool is_local_dev_host(const char *host, size_t len)
{
    return (len == 9 && strncasecmp(host, "localhost", 9) == 0) ||
           (len == 9 && strncmp(host, "127.0.0.1", 9) == 0);
}

/* The redirect URI is credex's own callback, which the browser (not credex) is sent to, so the
 * SSRF rules do not apply; its shape does: https (plain http only to the local machine outside
 * production), a host, no userinfo, no fragment (RFC 6749 3.1.2). */
static bool check_redirect_uri(const char *uri, const oauth_validate_env_t *env, cx_error_t *err)
{
    static const char field[] = "redirect_uri";
    if (empty(uri))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is required", field);
    if (strlen(uri) > CX_HTTP_URL_MAX || !visible_ascii(uri) || strchr(uri, '\\'))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is malformed", field);
    bool https = strncasecmp(uri, "https://", 8) == 0;
    bool http = strncasecmp(uri, "http://", 7) == 0;
    if (!https && !http)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s must be https", field);
    const char *auth = uri + (https ? 8 : 7);
    size_t alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s must carry no user information",
                            field);
    if (strchr(uri, '#'))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s must have no fragment", field);
    size_t hlen;
    const char *port;
    if (auth[0] == '[') {
        const char *close = memchr(auth, ']', alen);
        if (!close)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is malformed", field);
        hlen = (size_t)(close - auth) + 1;
    } else {
        const char *colon = memchr(auth, ':', alen);
        hlen = colon ? (size_t)(colon - auth) : alen;
    }
    if (hlen == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s has no host", field);
    port = auth + hlen;
    if (port < auth + alen) {
        if (*port != ':' || port + 1 == auth + alen || alen - hlen - 1 > 5)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s port is malformed", field);
        long n = 0;
        for (const char *p = port + 1; p < auth + alen; p++) {
            if (*p < '0' || *p > '9')
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s port is malformed", field);
            n = n * 10 + (*p - '0');
        }
        if (n < 1 || n > 65535)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s port is out of range", field);
    }
    if (http && (env->production || !is_local_dev_host(auth, hlen)))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            env->production
                                ? "%s must be https in production"
                                : "%s must be https (http only for localhost or 127.0.0.1)",
                            field);
    return true;
}

/* A custom connector's key: [a-z0-9-]{1,32} and no built-in key. */
static bool check_custom_key(const char *key, cx_error_t *err)
{
    size_t n = key ? strlen(key) : 0;
    if (n == 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "provider_key is required");
    if (n > KEY_MAX || strspn(key, "abcdefghijklmnopqrstuvwxyz0123456789-") != n)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "provider_key must be 1 to 32 of a-z, 0-9 and -");
    if (oauth_provider_find(key))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "provider_key of a custom connector cannot be a built-in key");
    return true;
}

static bool check_display_name(const char *name, cx_error_t *err)
{
    size_t n = strlen(name);
    if (n > DISPLAY_NAME_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "display_name is longer than %d bytes",
                            DISPLAY_NAME_MAX);
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "display_name has a control character");
    return true;
}

/* scope-token = 1*( %x21 / %x23-5B / %x5D-7E ) (RFC 6749 3.3). */
static bool scope_token_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > SCOPE_MAX || !visible_ascii(s))
        return false;
    return !strpbrk(s, "\"\\");
}

static bool add_scope(oauth_connector_t *c, const char *s, size_t len, cx_error_t *err)
{
    for (size_t i = 0; i < c->nscopes; i++)
        if (strlen(c->scopes[i]) == len && memcmp(c->scopes[i], s, len) == 0)
            return true;
    if (c->nscopes == OAUTH_SCOPES_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "scopes: more than %d", OAUTH_SCOPES_MAX);
    char *t = strndup(s, len);
    if (!t)
        return oom(err);
    c->scopes[c->nscopes++] = t;
    return true;
}

/* Space-separated scopes (a descriptor's default), trusted. */
static bool add_scope_list(oauth_connector_t *c, const char *list, cx_error_t *err)
{
    for (const char *s = list; s && *s;) {
        s += strspn(s, " ");
        size_t len = strcspn(s, " ");
        if (len && !add_scope(c, s, len, err))
            return false;
        s += len;
    }
    return true;
}

static bool check_scopes(const Credex__V1__Connector *in, const oauth_provider_t *p,
                         oauth_connector_t *c, cx_error_t *err)
{
    if (in->n_scopes > SCOPES_IN_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "scopes: more than %d", OAUTH_SCOPES_MAX);
    for (size_t i = 0; i < in->n_scopes; i++) {
        if (!in->scopes[i] || !scope_token_ok(in->scopes[i]))
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "scopes[%zu] is not a valid OAuth scope token", i);
        if (!add_scope(c, in->scopes[i], strlen(in->scopes[i]), err))
            return false;
    }
    if (c->nscopes > 0) {
        if (c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC) {
            for (size_t i = 0; i < c->nscopes; i++)
                if (strcmp(c->scopes[i], "openid") == 0)
                    return true;
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "scopes of an OIDC connector must include openid");
        }
        return true;
    }
    if (p && p->scopes_required)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "scopes are required for provider %s",
                            p->key);
    if (p)
        return add_scope_list(c, p->default_scopes, err);
    if (c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC)
        return add_scope_list(c, "openid", err);
    return true;
}

/* A dotted path of JSON member names: up to 4 non-empty segments of [A-Za-z0-9_:-]. */
static bool field_path_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > FIELD_NAME_MAX || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
        return false;
    int dots = 0;
    for (const char *p = s; *p; p++) {
        if (*p == '.')
            dots++;
        else if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:-", *p))
            return false;
    }
    return dots < FIELD_SEGMENTS_MAX;
}

/* A value an admin gave for something a built-in descriptor fixes: absent, or the same. */
static bool fixed_field(const char *field, const char *given, const char *fixed, cx_error_t *err)
{
    if (empty(given) || (fixed && strcmp(given, fixed) == 0))
        return true;
    return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is fixed for a built-in provider", field);
}

static bool check_mapping(const Credex__V1__Connector *in, const oauth_provider_t *p,
                          oauth_connector_t *c, cx_error_t *err)
{
    const Credex__V1__AccountMapping *m = in->account_mapping;
    const char *id = m && !empty(m->account_id_field) ? m->account_id_field : NULL;
    const char *name = m && !empty(m->account_name_field) ? m->account_name_field : NULL;
    if (p) {
        if (!fixed_field("account_mapping.account_id_field", id, p->account_id_field, err) ||
            !fixed_field("account_mapping.account_name_field", name, p->account_name_field, err))
            return false;
        id = p->account_id_field;
        name = p->account_name_field;
    } else if (c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC) {
        id = id ? id : "sub";
        name = name ? name : "name";
    } else if (!id && c->userinfo_url) {
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "account_mapping.account_id_field is required with "
                            "endpoints.userinfo_url");
    }
    if (id && !field_path_ok(id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "account_mapping.account_id_field is not a field path");
    if (name && !field_path_ok(name))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "account_mapping.account_name_field is not a field path");
    return (!id || set_str(&c->account_id_field, id, err)) &&
           (!name || set_str(&c->account_name_field, name, err));
}

static bool check_refresh(const Credex__V1__Connector *in, const oauth_provider_t *p,
                          oauth_connector_t *c, cx_error_t *err)
{
    const Credex__V1__RefreshPolicy *r = in->refresh_policy;
    c->refresh_enabled = r ? r->refresh_enabled : (p ? p->supports_refresh : true);
    int64_t ms = r ? r->refresh_before_expiry_ms : 0;
    if (ms == 0)
        ms = REFRESH_DEFAULT_MS;
    if (ms < REFRESH_MIN_MS || ms > REFRESH_MAX_MS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "refresh_policy.refresh_before_expiry_ms must be 0 or %d to %d",
                            REFRESH_MIN_MS, REFRESH_MAX_MS);
    if (c->refresh_enabled && p && !p->supports_refresh)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "refresh_policy.refresh_enabled: provider %s issues no refresh tokens",
                            p->key);
    c->refresh_before_expiry_ms = ms;
    return true;
}

static const char *reserved_name(const char *name)
{
    for (size_t i = 0; reserved_params[i]; i++)
        if (strcasecmp(name, reserved_params[i]) == 0)
            return reserved_params[i];
    return NULL;
}

static bool add_param(oauth_connector_t *c, const char *name, const char *value, cx_error_t *err)
{
    if (c->nauth_params == OAUTH_AUTH_PARAMS_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "authorization_params: more than %d",
                            OAUTH_AUTH_PARAMS_MAX);
    oauth_param_t *q = &c->auth_params[c->nauth_params];
    q->name = strdup(name);
    q->value = strdup(value);
    if (!q->name || !q->value) {
        free((char *)q->name);
        free((char *)q->value);
        q->name = q->value = NULL;
        return oom(err);
    }
    c->nauth_params++;
    return true;
}

static const char *find_param(const oauth_connector_t *c, const char *name)
{
    for (size_t i = 0; i < c->nauth_params; i++)
        if (strcmp(c->auth_params[i].name, name) == 0)
            return c->auth_params[i].value;
    return NULL;
}

static bool check_params(const Credex__V1__Connector *in, const oauth_provider_t *p,
                         oauth_connector_t *c, cx_error_t *err)
{
    size_t fixed = 0;
    for (const oauth_param_t *d = p ? p->authorization_params : NULL; d && d->name; d++, fixed++)
        if (!add_param(c, d->name, d->value, err))
            return false;
    if (in->n_authorization_params > OAUTH_AUTH_PARAMS_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "authorization_params: more than %d",
                            OAUTH_AUTH_PARAMS_MAX);
    for (size_t i = 0; i < in->n_authorization_params; i++) {
        const Credex__V1__Connector__AuthorizationParamsEntry *e = in->authorization_params[i];
        const char *k = e && e->key ? e->key : "", *v = e && e->value ? e->value : "";
        size_t kn = strlen(k);
        if (kn == 0 || kn > PARAM_NAME_MAX ||
            strspn(k, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != kn)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "authorization_params: a parameter name is malformed");
        const char *r = reserved_name(k);
        if (r)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "authorization_params cannot set %s",
                                r);
        size_t vn = strlen(v);
        bool vok = vn <= PARAM_VALUE_MAX;
        for (const char *q = v; vok && *q; q++)
            vok = (unsigned char)*q >= 0x20 && (unsigned char)*q <= 0x7e;
        if (!vok)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "authorization_params: a value is malformed or too long");
        const char *have = find_param(c, k);
        if (have) {
            /* a stored built-in connector carries the descriptor's parameters back */
            bool descriptor_own = false;
            for (size_t j = 0; j < fixed; j++)
                descriptor_own |= strcmp(c->auth_params[j].name, k) == 0;
            if (!descriptor_own)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "authorization_params: a parameter name repeats");
            if (strcmp(have, v) != 0)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                    "authorization_params: a parameter of provider %s is fixed",
                                    p->key);
            continue;
        }
        if (!add_param(c, k, v, err))
            return false;
    }
    return true;
}

/* Built-in: endpoints from the descriptor, under the connector's base URL when the provider has
 * one (a self-managed GitLab gives it in endpoints.issuer_url). */
static bool builtin_endpoints(const Credex__V1__ConnectorEndpoints *ep, const oauth_provider_t *p,
                              const oauth_validate_env_t *env, oauth_connector_t *c,
                              cx_error_t *err)
{
    const char *base = "";
    char *base_buf = NULL;
    bool ok = false;
    if (p->base_url_configurable) {
        base = p->base_url;
        if (ep && !empty(ep->issuer_url)) {
            base_buf = strdup(ep->issuer_url);
            if (!base_buf)
                return oom(err);
            size_t n = strlen(base_buf);
            if (n > 0 && base_buf[n - 1] == '/')
                base_buf[n - 1] = '\0'; /* https://git.example.com/ names the same base */
            if (!check_base_url("endpoints.issuer_url", base_buf, env, err))
                goto out;
            base = base_buf;
        }
        if (!set_str(&c->issuer_url, base, err))
            goto out;
    } else if (ep && !empty(ep->issuer_url)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "endpoints.issuer_url is fixed for a built-in provider");
        goto out;
    }
    const struct {
        const char *field, *path, *given;
        char **dst;
    } urls[] = {
        {"endpoints.authorization_url", p->authorization_url, ep ? ep->authorization_url : NULL,
         &c->authorization_url},
        {"endpoints.token_url", p->token_url, ep ? ep->token_url : NULL, &c->token_url},
        {"endpoints.userinfo_url", p->userinfo_url, ep ? ep->userinfo_url : NULL, &c->userinfo_url},
        {"endpoints.revocation_url", p->revocation_url, ep ? ep->revocation_url : NULL,
         &c->revocation_url},
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        if (!urls[i].path) {
            if (!fixed_field(urls[i].field, urls[i].given, NULL, err))
                goto out;
            continue;
        }
        size_t n = strlen(base) + strlen(urls[i].path) + 1;
        char *u = malloc(n);
        if (!u) {
            oom(err);
            goto out;
        }
        snprintf(u, n, "%s%s", base, urls[i].path);
        *urls[i].dst = u;
        if (!fixed_field(urls[i].field, urls[i].given, u, err) ||
            !check_url(urls[i].field, u, env, err))
            goto out;
    }
    ok = true;
out:
    free(base_buf);
    return ok;
}

static bool custom_endpoints(const Credex__V1__ConnectorEndpoints *ep,
                             const oauth_validate_env_t *env, oauth_connector_t *c, cx_error_t *err)
{
    bool oidc = c->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC;
    const struct {
        const char *field, *given;
        char **dst;
        bool required;
    } urls[] = {
        {"endpoints.authorization_url", ep ? ep->authorization_url : NULL, &c->authorization_url,
         !oidc},
        {"endpoints.token_url", ep ? ep->token_url : NULL, &c->token_url, !oidc},
        {"endpoints.userinfo_url", ep ? ep->userinfo_url : NULL, &c->userinfo_url, false},
        {"endpoints.revocation_url", ep ? ep->revocation_url : NULL, &c->revocation_url, false},
        {"endpoints.issuer_url", ep ? ep->issuer_url : NULL, &c->issuer_url, oidc},
    };
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        if (empty(urls[i].given)) {
            if (urls[i].required)
                return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is required", urls[i].field);
            continue;
        }
        bool is_issuer = urls[i].dst == &c->issuer_url;
        if (!(is_issuer ? check_base_url : check_url)(urls[i].field, urls[i].given, env, err) ||
            !set_str(urls[i].dst, urls[i].given, err))
            return false;
    }
    return true;
}

const char *oauth_client_auth_name(oauth_client_auth_t a)
{
    return a == OAUTH_CLIENT_AUTH_POST ? "client_secret_post" : "client_secret_basic";
}

/* Built-ins authenticate as their provider requires; a custom connector as its admin says, by
 * default with HTTP Basic (the method every RFC 6749 server must support). */
static bool check_client_auth(const char *method, const oauth_provider_t *p, oauth_connector_t *c,
                              cx_error_t *err)
{
    oauth_client_auth_t m = p ? p->client_auth : OAUTH_CLIENT_AUTH_BASIC;
    if (!empty(method)) {
        if (strcmp(method, "client_secret_basic") == 0)
            m = OAUTH_CLIENT_AUTH_BASIC;
        else if (strcmp(method, "client_secret_post") == 0)
            m = OAUTH_CLIENT_AUTH_POST;
        else
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "client_auth_method must be client_secret_basic or "
                                "client_secret_post");
        if (p && m != p->client_auth)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                "client_auth_method of a built-in connector is the provider's");
    }
    c->client_auth = m;
    return true;
}

static bool validate(const Credex__V1__Connector *in, const oauth_validate_env_t *env,
                     oauth_connector_t *c, cx_error_t *err)
{
    const oauth_provider_t *p = NULL;
    switch (in->type) {
    case CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN:
        p = oauth_provider_find(in->provider_key);
        if (!p)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                                empty(in->provider_key)
                                    ? "provider_key is required"
                                    : "provider_key is not a built-in provider");
        break;
    case CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OAUTH2:
    case CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC:
        if (!check_custom_key(in->provider_key, err))
            return false;
        break;
    case CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_UNSPECIFIED:
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "type is required");
    default:
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "type is unknown");
    }
    c->type = in->type;
    if (!set_str(&c->provider_key, in->provider_key, err))
        return false;

    const char *dn = in->display_name;
    if (empty(dn)) {
        if (!p)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "display_name is required");
        dn = p->display_name;
    }
    if (!check_display_name(dn, err) || !set_str(&c->display_name, dn, err))
        return false;

    if (empty(in->client_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "client_id is required");
    if (strlen(in->client_id) > CLIENT_ID_MAX || !visible_ascii(in->client_id))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "client_id must be 1 to %d visible ASCII characters", CLIENT_ID_MAX);
    if (!set_str(&c->client_id, in->client_id, err))
        return false;

    if (!check_redirect_uri(in->redirect_uri, env, err) ||
        !set_str(&c->redirect_uri, in->redirect_uri, err))
        return false;

    if (p ? !builtin_endpoints(in->endpoints, p, env, c, err)
          : !custom_endpoints(in->endpoints, env, c, err))
        return false;
    if (!check_client_auth(in->client_auth_method, p, c, err))
        return false;

    return check_scopes(in, p, c, err) && check_mapping(in, p, c, err) &&
           check_refresh(in, p, c, err) && check_params(in, p, c, err);
}

bool oauth_connector_validate(const Credex__V1__Connector *in, const oauth_validate_env_t *env,
                              oauth_connector_t *out, cx_error_t *err)
{
    static const oauth_validate_env_t defaults = {.production = true};
    if (out)
        memset(out, 0, sizeof(*out));
    if (!in || !out)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector is required");
    oauth_connector_t c;
    memset(&c, 0, sizeof(c));
    if (!validate(in, env ? env : &defaults, &c, err)) {
        oauth_connector_clear(&c);
        return false;
    }
    *out = c;
    return true;
}

void oauth_connector_clear(oauth_connector_t *c)
{
    if (!c)
        return;
    char **strs[] = {&c->provider_key,      &c->display_name,      &c->client_id,
                     &c->authorization_url, &c->token_url,         &c->userinfo_url,
                     &c->revocation_url,    &c->issuer_url,        &c->redirect_uri,
                     &c->account_id_field,  &c->account_name_field};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        free(*strs[i]);
    for (size_t i = 0; i < c->nscopes; i++)
        free(c->scopes[i]);
    for (size_t i = 0; i < c->nauth_params; i++) {
        free((char *)c->auth_params[i].name);
        free((char *)c->auth_params[i].value);
    }
    memset(c, 0, sizeof(*c));
}
