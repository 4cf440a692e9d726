/*
 * oauth: the built-in provider descriptors (see oauth_internal.h). One const table; every
 * provider difference is a field the generic OAuth code reads, never a branch on a key here or
 * anywhere else. The facts of each row come from the provider's public documentation, named in
 * the comment above the row (page titles; re-read them when a provider changes its API).
 */
#include <stdlib.h>
#include <string.h>

#include "services/oauth/oauth_internal.h"

static const oauth_param_t atlassian_params[] = {
    /* the API the token is for: without it the consent screen offers no Jira/Confluence
       access */
    {"audience", "api.atlassian.com"},
    /* Atlassian documents prompt=consent as required, so that the consent screen (and a
       refresh token for offline_access) is always shown */
    {"prompt", "consent"},
    {NULL, NULL},
};

static const oauth_provider_t providers[] = {
    /* GitHub. Sources: "Authorizing OAuth apps" (authorize and access_token endpoints, scope
     * is space-delimited, the token reply is form-encoded unless Accept: application/json,
     * errors such as bad_verification_code come back with status 200 and an "error" field);
     * "PKCE support for OAuth and GitHub App authentication" (changelog, 2025: S256 only);
     * "Refreshing user access tokens" (a refresh token only for GitHub Apps with expiring user
     * tokens enabled; each refresh returns a new refresh token); "Get the authenticated user"
     * (GET /user: id, login). Revocation is DELETE /applications/{client_id}/token with a JSON
     * body and Basic client credentials ("OAuth authorizations" REST page), not RFC 7009, so
     * the generic revocation cannot call it: NULL, and the user revokes at GitHub. */
    {
        .key = "github",
        .display_name = "GitHub",
        .env_prefix = "GITHUB",
        .authorization_url = "https://github.com/login/oauth/authorize",
        .token_url = "https://github.com/login/oauth/access_token",
        .revocation_url = NULL,
        .userinfo_url = "https://api.github.com/user",
        .default_scopes = "read:user repo",
        .scope_separator = " ",
        .pkce_s256 = true,
        .client_auth = OAUTH_CLIENT_AUTH_POST,
        .token_accept_json = true,
        .token_error_in_200 = true,
        .supports_refresh = true,
        .rotates_refresh_tokens = true,
        .account_id_field = "id",
        .account_name_field = "login",
        .docs_url =
            "https://docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps",
        .api_base_url = "https://api.github.com",
    },
    /* Atlassian (Jira and Confluence Cloud). Sources: "OAuth 2.0 (3LO) apps" (authorize at
     * auth.atlassian.com with audience=api.atlassian.com and prompt=consent; token endpoint
     * /oauth/token with client_id and client_secret in the body; offline_access for a refresh
     * token; GET /oauth/token/accessible-resources names the sites (cloud ids) a token
     * reaches; GET /me for the account: account_id, name; no revocation endpoint: the user
     * revokes in the account's connected apps); "Deprecating persistent refresh tokens"
     * (developer community announcement: refresh tokens rotate, single use). PKCE is not
     * documented for 3LO: not sent. The bootstrap prefix is CONFLUENCE as in the quickstart. */
    {
        .key = "atlassian",
        .display_name = "Atlassian (Jira and Confluence)",
        .env_prefix = "CONFLUENCE",
        .authorization_url = "https://auth.atlassian.com/authorize",
        .token_url = "https://auth.atlassian.com/oauth/token",
        .revocation_url = NULL,
        .userinfo_url = "https://api.atlassian.com/me",
        .resources_url = "https://api.atlassian.com/oauth/token/accessible-resources",
        .default_scopes = "read:me read:jira-work read:jira-user read:confluence-content.all "
                          "read:confluence-space.summary offline_access",
        .scope_separator = " ",
        .pkce_s256 = false,
        .client_auth = OAUTH_CLIENT_AUTH_POST,
        .supports_refresh = true,
        .rotates_refresh_tokens = true,
        .requires_provider_resource = true,
        .account_id_field = "account_id",
        .account_name_field = "name",
        .authorization_params = atlassian_params,
        .docs_url = "https://developer.atlassian.com/cloud/jira/platform/oauth-2-3lo-apps/",
        .api_base_url = "https://api.atlassian.com/ex/jira",
        .api_url_per_resource = true,
    },
    /* Webex. Sources: "Integrations & Authorization" (authorize and access_token under
     * webexapis.com/v1, authorization code with or without PKCE, client_id and client_secret
     * in the form body, refresh tokens that keep their value and last 90 days while used,
     * spark:* scopes space-separated, revocation by the user or DELETE /v1/authorizations,
     * not RFC 7009: NULL); "People: Get My Own Details" (GET /v1/people/me: id, displayName;
     * needs spark:people_read). */
    {
        .key = "webex",
        .display_name = "Webex",
        .env_prefix = "WEBEX",
        .authorization_url = "https://webexapis.com/v1/authorize",
        .token_url = "https://webexapis.com/v1/access_token",
        .revocation_url = NULL,
        .userinfo_url = "https://webexapis.com/v1/people/me",
        .default_scopes = "spark:kms spark:people_read spark:rooms_read spark:messages_read",
        .scope_separator = " ",
        .pkce_s256 = true,
        .client_auth = OAUTH_CLIENT_AUTH_POST,
        .supports_refresh = true,
        .rotates_refresh_tokens = false,
        .account_id_field = "id",
        .account_name_field = "displayName",
        .docs_url = "https://developer.webex.com/docs/integrations",
        .api_base_url = "https://webexapis.com/v1",
    },
    /* PagerDuty (scoped OAuth apps). Sources: "Obtaining a User OAuth Token via Code Grant"
     * (authorize and token under identity.pagerduty.com/oauth, client_id and client_secret in
     * the form body, scopes space-separated and chosen per app, so no usable default: hence
     * PAGERDUTY_SCOPES; every refresh answers a new refresh token); "OAuth 2.0: PKCE Flow"
     * (S256); "Get the current user" (GET /users/me answers {"user": {"id", "name", ...}}:
     * nested fields, named as dotted paths). The revocation endpoint (RFC 7009 form, client_id
     * and token) is not on those pages but is the one integrations call; a disconnect treats
     * revocation as best effort anyway. */
    {
        .key = "pagerduty",
        .display_name = "PagerDuty",
        .env_prefix = "PAGERDUTY",
        .authorization_url = "https://identity.pagerduty.com/oauth/authorize",
        .token_url = "https://identity.pagerduty.com/oauth/token",
        .revocation_url = "https://identity.pagerduty.com/oauth/revoke",
        .userinfo_url = "https://api.pagerduty.com/users/me",
        .default_scopes = NULL,
        .scopes_required = true,
        .scope_separator = " ",
        .pkce_s256 = true,
        .client_auth = OAUTH_CLIENT_AUTH_POST,
        .supports_refresh = true,
        .rotates_refresh_tokens = true,
        .account_id_field = "user.id",
        .account_name_field = "user.name",
        .docs_url = "https://developer.pagerduty.com/docs/oauth-functionality",
        .api_base_url = "https://api.pagerduty.com",
    },
    /* GitLab (gitlab.com, or a self-managed instance at the connector's base URL). Sources:
     * "OAuth 2.0 identity provider API" (/oauth/authorize, /oauth/token, /oauth/revoke
     * (RFC 7009), authorization code with PKCE, client credentials in the body or Basic
     * (Doorkeeper), refresh tokens that rotate: the old one dies on use); "Users API"
     * (GET /api/v4/user: id, username). Scopes (api, read_user, ...) depend on what the app
     * was registered with: GITLAB_SCOPES. */
    {
        .key = "gitlab",
        .display_name = "GitLab",
        .env_prefix = "GITLAB",
        .base_url_configurable = true,
        .base_url = "https://gitlab.com",
        .authorization_url = "/oauth/authorize",
        .token_url = "/oauth/token",
        .revocation_url = "/oauth/revoke",
        .userinfo_url = "/api/v4/user",
        .default_scopes = NULL,
        .scopes_required = true,
        .scope_separator = " ",
        .pkce_s256 = true,
        .client_auth = OAUTH_CLIENT_AUTH_POST,
        .supports_refresh = true,
        .rotates_refresh_tokens = true,
        .account_id_field = "id",
        .account_name_field = "username",
        .docs_url = "https://docs.gitlab.com/api/oauth2/",
        .api_base_url = "/api/v4",
    },
};

const oauth_provider_t *oauth_provider_find(const char *key)
{
    if (!key)
        return NULL;
    for (size_t i = 0; i < sizeof(providers) / sizeof(providers[0]); i++)
        if (strcmp(providers[i].key, key) == 0)
            return &providers[i];
    return NULL;
}

const oauth_provider_t *oauth_providers(size_t *n)
{
    if (n)
        *n = sizeof(providers) / sizeof(providers[0]);
    return providers;
}

/* A malloc'd copy of a (NULL: "") with b (NULL: nothing) appended: every string of the reply
 * is the message's own, so that protobuf_c_message_free_unpacked frees it all. */
static char *dup_cat(const char *a, const char *b)
{
    size_t la = a ? strlen(a) : 0, lb = b ? strlen(b) : 0;
    char *s = malloc(la + lb + 1);
    if (!s)
        return NULL;
    if (la)
        memcpy(s, a, la);
    if (lb)
        memcpy(s + la, b, lb);
    s[la + lb] = '\0';
    return s;
}

/* An endpoint of p as an absolute URL ("" when the provider has none). */
static char *endpoint(const oauth_provider_t *p, const char *url)
{
    if (!url)
        return dup_cat(NULL, NULL);
    return dup_cat(p->base_url_configurable ? p->base_url : NULL, url);
}

static bool fill_scopes(Credex__V1__BuiltinProvider *m, const char *scopes)
{
    if (!scopes)
        return true;
    size_t n = 0;
    for (const char *s = scopes; *s;) {
        s += strspn(s, " ");
        if (*s)
            n++;
        s += strcspn(s, " ");
    }
    if (n == 0)
        return true;
    m->default_scopes = calloc(n, sizeof(char *));
    if (!m->default_scopes)
        return false;
    for (const char *s = scopes; *s;) {
        s += strspn(s, " ");
        size_t len = strcspn(s, " ");
        if (len) {
            char *t = malloc(len + 1);
            if (!t)
                return false;
            memcpy(t, s, len);
            t[len] = '\0';
            m->default_scopes[m->n_default_scopes++] = t;
        }
        s += len;
    }
    return true;
}

static bool fill_params(Credex__V1__BuiltinProvider *m, const oauth_param_t *params)
{
    size_t n = 0;
    while (params && params[n].name)
        n++;
    if (n == 0)
        return true;
    m->authorization_params = calloc(n, sizeof(*m->authorization_params));
    if (!m->authorization_params)
        return false;
    for (size_t i = 0; i < n; i++) {
        Credex__V1__BuiltinProvider__AuthorizationParamsEntry *e = malloc(sizeof(*e));
        if (!e)
            return false;
        credex__v1__builtin_provider__authorization_params_entry__init(e);
        e->key = e->value = NULL;
        m->authorization_params[m->n_authorization_params++] = e;
        e->key = dup_cat(params[i].name, NULL);
        e->value = dup_cat(params[i].value, NULL);
        if (!e->key || !e->value)
            return false;
    }
    return true;
}

Credex__V1__BuiltinProvider *oauth_provider_to_proto(const oauth_provider_t *p)
{
    if (!p)
        return NULL;
    Credex__V1__BuiltinProvider *m = malloc(sizeof(*m));
    Credex__V1__ConnectorEndpoints *ep = malloc(sizeof(*ep));
    if (!m || !ep) {
        free(m);
        free(ep);
        return NULL;
    }
    credex__v1__builtin_provider__init(m);
    credex__v1__connector_endpoints__init(ep);
    m->endpoints = ep;
    /* Every string is malloc'd (the empty ones too): free_unpacked then frees them all
       without having to tell a shared default from the message's own. */
    m->provider_key = dup_cat(p->key, NULL);
    m->display_name = dup_cat(p->display_name, NULL);
    ep->authorization_url = endpoint(p, p->authorization_url);
    ep->token_url = endpoint(p, p->token_url);
    ep->userinfo_url = endpoint(p, p->userinfo_url);
    ep->revocation_url = endpoint(p, p->revocation_url);
    /* The base URL of a provider that has one (GitLab), as a connector names a self-managed
       instance (ConnectorEndpoints.issuer_url). */
    ep->issuer_url = dup_cat(p->base_url_configurable ? p->base_url : NULL, NULL);
    m->supports_refresh = p->supports_refresh;
    m->requires_provider_resource = p->requires_provider_resource;
    bool ok = m->provider_key && m->display_name && ep->authorization_url && ep->token_url &&
              ep->userinfo_url && ep->revocation_url && ep->issuer_url;
    if (ok)
        ok = fill_scopes(m, p->default_scopes) && fill_params(m, p->authorization_params);
    if (!ok) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        return NULL;
    }
    return m;
}
