/*
 * TEMPORARY (remove when providers.c, validate.c, discovery.c and bootstrap_env.c are built):
 * minimal stand-ins for the pure modules of oauth_internal.h, so that the service half
 * (connectors.c, bootstrap.c) links and its black-box tests run meanwhile. Deliberately small:
 * the real modules own every provider quirk and every validation rule. This file and its line
 * in CMakeLists.txt go away in the same commit that brings the real modules in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto/cx_crypto.h"
#include "services/oauth/oauth_internal.h"

static const oauth_param_t pending_atlassian_params[] = {
    {"audience", "api.atlassian.com"}, {"prompt", "consent"}, {NULL, NULL}};

static const oauth_provider_t pending_providers[] = {
    {.key = "github",
     .display_name = "GitHub",
     .env_prefix = "GITHUB",
     .authorization_url = "https://github.com/login/oauth/authorize",
     .token_url = "https://github.com/login/oauth/access_token",
     .userinfo_url = "https://api.github.com/user",
     .default_scopes = "read:user",
     .scope_separator = " ",
     .pkce_s256 = true,
     .token_accept_json = true,
     .token_error_in_200 = true,
     .account_id_field = "id",
     .account_name_field = "login"},
    {.key = "atlassian",
     .display_name = "Atlassian",
     .env_prefix = "CONFLUENCE",
     .authorization_url = "https://auth.atlassian.com/authorize",
     .token_url = "https://auth.atlassian.com/oauth/token",
     .userinfo_url = "https://api.atlassian.com/me",
     .resources_url = "https://api.atlassian.com/oauth/token/accessible-resources",
     .default_scopes = "read:me offline_access",
     .scope_separator = " ",
     .pkce_s256 = true,
     .supports_refresh = true,
     .rotates_refresh_tokens = true,
     .requires_provider_resource = true,
     .account_id_field = "account_id",
     .account_name_field = "name",
     .authorization_params = pending_atlassian_params},
    {.key = "webex",
     .display_name = "Webex",
     .env_prefix = "WEBEX",
     .authorization_url = "https://webexapis.com/v1/authorize",
     .token_url = "https://webexapis.com/v1/access_token",
     .userinfo_url = "https://webexapis.com/v1/people/me",
     .default_scopes = "spark:people_read",
     .scope_separator = " ",
     .pkce_s256 = true,
     .supports_refresh = true,
     .account_id_field = "id",
     .account_name_field = "displayName"},
    {.key = "pagerduty",
     .display_name = "PagerDuty",
     .env_prefix = "PAGERDUTY",
     .authorization_url = "https://identity.pagerduty.com/oauth/authorize",
     .token_url = "https://identity.pagerduty.com/oauth/token",
     .userinfo_url = "https://api.pagerduty.com/users/me",
     .scopes_required = true,
     .scope_separator = " ",
     .pkce_s256 = true,
     .supports_refresh = true,
     .account_id_field = "id",
     .account_name_field = "name"},
    {.key = "gitlab",
     .display_name = "GitLab",
     .env_prefix = "GITLAB",
     .base_url_configurable = true,
     .base_url = "https://gitlab.com",
     .authorization_url = "/oauth/authorize",
     .token_url = "/oauth/token",
     .revocation_url = "/oauth/revoke",
     .userinfo_url = "/api/v4/user",
     .scopes_required = true,
     .scope_separator = " ",
     .pkce_s256 = true,
     .supports_refresh = true,
     .account_id_field = "id",
     .account_name_field = "username"},
};
#define PENDING_NPROVIDERS (sizeof(pending_providers) / sizeof(pending_providers[0]))

const oauth_provider_t *oauth_provider_find(const char *key)
{
    for (size_t i = 0; key && i < PENDING_NPROVIDERS; i++)
        if (strcmp(pending_providers[i].key, key) == 0)
            return &pending_providers[i];
    return NULL;
}

const oauth_provider_t *oauth_providers(size_t *n)
{
    *n = PENDING_NPROVIDERS;
    return pending_providers;
}

static char *pending_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static char *pending_url(const oauth_provider_t *p, const char *u)
{
    if (!u)
        return NULL;
    if (!p->base_url_configurable)
        return strdup(u);
    size_t n = strlen(p->base_url) + strlen(u) + 1;
    char *out = malloc(n);
    if (out)
        snprintf(out, n, "%s%s", p->base_url, u);
    return out;
}

Credex__V1__BuiltinProvider *oauth_provider_to_proto(const oauth_provider_t *p)
{
    Credex__V1__BuiltinProvider *b = calloc(1, sizeof(*b));
    Credex__V1__ConnectorEndpoints *e = calloc(1, sizeof(*e));
    if (!b || !e) {
        free(b);
        free(e);
        return NULL;
    }
    credex__v1__builtin_provider__init(b);
    credex__v1__connector_endpoints__init(e);
    b->provider_key = strdup(p->key);
    b->display_name = strdup(p->display_name);
    e->authorization_url = pending_url(p, p->authorization_url);
    e->token_url = pending_url(p, p->token_url);
    e->userinfo_url = pending_url(p, p->userinfo_url);
    e->revocation_url = p->revocation_url ? pending_url(p, p->revocation_url) : strdup("");
    e->issuer_url = strdup("");
    b->endpoints = e;
    b->supports_refresh = p->supports_refresh;
    b->requires_provider_resource = p->requires_provider_resource;
    return b;
}

static bool pending_url_ok(const char *field, const char *url, const oauth_validate_env_t *env,
                           bool required, cx_error_t *err)
{
    if (!url || !url[0]) {
        if (required)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is required", field);
        return true;
    }
    cx_error_t e;
    if (!cx_http_url_check(url, env ? env->allow_hosts : NULL, &e))
        return cx_error_set(err, e.code, "%s: %s", field, e.message);
    return true;
}

static bool pending_add_scopes(oauth_connector_t *out, const char *list)
{
    char *copy = strdup(list ? list : "");
    if (!copy)
        return false;
    char *save = NULL;
    for (char *t = strtok_r(copy, " ", &save); t && out->nscopes < OAUTH_SCOPES_MAX;
         t = strtok_r(NULL, " ", &save))
        out->scopes[out->nscopes++] = strdup(t);
    free(copy);
    return true;
}

bool oauth_connector_validate(const Credex__V1__Connector *in, const oauth_validate_env_t *env,
                              oauth_connector_t *out, cx_error_t *err)
{
    memset(out, 0, sizeof(*out));
    if (!in)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector is required");
    if (!in->provider_key || !in->provider_key[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector.provider_key is required");
    if (in->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_UNSPECIFIED)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector.type is required");
    if (!in->client_id || !in->client_id[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector.client_id is required");
    if (!in->redirect_uri || !in->redirect_uri[0])
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector.redirect_uri is required");
    const oauth_provider_t *p = oauth_provider_find(in->provider_key);
    bool builtin = in->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN;
    if (builtin && !p)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "connector.provider_key: not a built-in provider");
    if (!builtin && p)
        return cx_error_set(
            err, CX_ERR_INVALID_ARGUMENT,
            "connector.provider_key: a built-in key cannot name a custom connector");
    const Credex__V1__ConnectorEndpoints *e = in->endpoints;
    out->provider_key = strdup(in->provider_key);
    out->type = in->type;
    out->display_name =
        strdup(in->display_name && in->display_name[0] ? in->display_name
                                                       : (p ? p->display_name : in->provider_key));
    out->client_id = strdup(in->client_id);
    out->redirect_uri = strdup(in->redirect_uri);
    if (builtin) {
        out->authorization_url = pending_url(p, p->authorization_url);
        out->token_url = pending_url(p, p->token_url);
        out->userinfo_url = pending_url(p, p->userinfo_url);
        out->revocation_url = p->revocation_url ? pending_url(p, p->revocation_url) : NULL;
        out->account_id_field = pending_strdup(p->account_id_field);
        out->account_name_field = pending_strdup(p->account_name_field);
        out->client_auth = p->client_auth;
        for (const oauth_param_t *a = p->authorization_params; a && a->name; a++) {
            out->auth_params[out->nauth_params].name = strdup(a->name);
            out->auth_params[out->nauth_params++].value = strdup(a->value);
        }
    } else {
        bool oidc = in->type == CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_CUSTOM_OIDC;
        if (!pending_url_ok("connector.endpoints.authorization_url",
                            e ? e->authorization_url : NULL, env, !oidc, err) ||
            !pending_url_ok("connector.endpoints.token_url", e ? e->token_url : NULL, env, !oidc,
                            err) ||
            !pending_url_ok("connector.endpoints.userinfo_url", e ? e->userinfo_url : NULL, env,
                            false, err) ||
            !pending_url_ok("connector.endpoints.revocation_url", e ? e->revocation_url : NULL, env,
                            false, err) ||
            !pending_url_ok("connector.endpoints.issuer_url", e ? e->issuer_url : NULL, env, oidc,
                            err)) {
            oauth_connector_clear(out);
            return false;
        }
        if (e) {
            out->authorization_url = e->authorization_url[0] ? strdup(e->authorization_url) : NULL;
            out->token_url = e->token_url[0] ? strdup(e->token_url) : NULL;
            out->userinfo_url = e->userinfo_url[0] ? strdup(e->userinfo_url) : NULL;
            out->revocation_url = e->revocation_url[0] ? strdup(e->revocation_url) : NULL;
            out->issuer_url = e->issuer_url[0] ? strdup(e->issuer_url) : NULL;
        }
        const Credex__V1__AccountMapping *m = in->account_mapping;
        out->account_id_field = strdup(m && m->account_id_field[0] ? m->account_id_field : "sub");
        out->account_name_field =
            strdup(m && m->account_name_field[0] ? m->account_name_field : "name");
        for (size_t i = 0; i < in->n_authorization_params && i < OAUTH_AUTH_PARAMS_MAX; i++) {
            out->auth_params[out->nauth_params].name = strdup(in->authorization_params[i]->key);
            out->auth_params[out->nauth_params++].value =
                strdup(in->authorization_params[i]->value);
        }
    }
    if (in->n_scopes) {
        for (size_t i = 0; i < in->n_scopes && i < OAUTH_SCOPES_MAX; i++)
            out->scopes[out->nscopes++] = strdup(in->scopes[i]);
    } else if (p && p->default_scopes) {
        pending_add_scopes(out, p->default_scopes);
    } else if (!p || p->scopes_required) {
        oauth_connector_clear(out);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "connector.scopes is required");
    }
    if (in->refresh_policy) {
        out->refresh_enabled = in->refresh_policy->refresh_enabled;
        out->refresh_before_expiry_ms = in->refresh_policy->refresh_before_expiry_ms;
    }
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

bool oauth_discovery_parse(const char *issuer, const char *body, size_t len,
                           const char *const *allow_hosts, oauth_discovered_t *out, cx_error_t *err)
{
    (void)issuer, (void)body, (void)len, (void)allow_hosts, (void)out;
    return cx_error_set(err, CX_ERR_UNIMPLEMENTED, "discovery is not built yet");
}

bool oauth_discover(cx_http_t *http, const char *issuer, bool oidc, const char *const *allow_hosts,
                    oauth_discovered_t *out, cx_error_t *err)
{
    (void)http, (void)issuer, (void)oidc, (void)allow_hosts, (void)out;
    return cx_error_set(err, CX_ERR_UNIMPLEMENTED, "discovery is not built yet");
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

static const char *pending_env(cx_config_getenv_fn fn, void *ctx, const char *prefix,
                               const char *suffix)
{
    char name[64];
    snprintf(name, sizeof(name), "%s_%s", prefix, suffix);
    const char *v = fn ? fn(ctx, name) : getenv(name);
    return v && v[0] ? v : NULL;
}

bool oauth_bootstrap_specs_read(cx_config_getenv_fn fn, void *ctx, oauth_bootstrap_spec_t **specs,
                                size_t *n, cx_error_t *err)
{
    oauth_bootstrap_spec_t *out = calloc(PENDING_NPROVIDERS, sizeof(*out));
    size_t k = 0;
    if (!out)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    for (size_t i = 0; i < PENDING_NPROVIDERS; i++) {
        const oauth_provider_t *p = &pending_providers[i];
        const char *id = pending_env(fn, ctx, p->env_prefix, "CLIENT_ID");
        const char *secret = pending_env(fn, ctx, p->env_prefix, "CLIENT_SECRET");
        const char *redirect = pending_env(fn, ctx, p->env_prefix, "REDIRECT_URI");
        const char *scopes = pending_env(fn, ctx, p->env_prefix, "SCOPES");
        if (!id && !secret && !redirect && !scopes)
            continue;
        const char *missing = !id                               ? "CLIENT_ID"
                              : !secret                         ? "CLIENT_SECRET"
                              : !redirect                       ? "REDIRECT_URI"
                              : (!scopes && p->scopes_required) ? "SCOPES"
                                                                : NULL;
        if (missing) {
            oauth_bootstrap_specs_free(out, k);
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s_%s is required", p->env_prefix,
                                missing);
        }
        oauth_bootstrap_spec_t *s = &out[k++];
        s->provider = p;
        snprintf(s->client_id, sizeof(s->client_id), "%s", id);
        snprintf(s->redirect_uri, sizeof(s->redirect_uri), "%s", redirect);
        snprintf(s->scopes, sizeof(s->scopes), "%s", scopes ? scopes : "");
        s->client_secret_len = strlen(secret);
        s->client_secret = malloc(s->client_secret_len);
        if (!s->client_secret) {
            oauth_bootstrap_specs_free(out, k);
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        }
        memcpy(s->client_secret, secret, s->client_secret_len);
    }
    *specs = out;
    *n = k;
    return true;
}

void oauth_bootstrap_specs_free(oauth_bootstrap_spec_t *specs, size_t n)
{
    for (size_t i = 0; specs && i < n; i++) {
        if (specs[i].client_secret)
            cx_crypto_wipe(specs[i].client_secret, specs[i].client_secret_len);
        free(specs[i].client_secret);
    }
    free(specs);
}
