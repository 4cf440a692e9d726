/*
 * oauth bootstrap: with CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS=true, the built-in connectors of
 * the environment (<PREFIX>_CLIENT_ID, _CLIENT_SECRET, _REDIRECT_URI, _SCOPES) are created or
 * updated at start-up, before the server listens (see oauth_internal.h).
 *
 * Several replicas may start at once with the same environment, and every one restarts:
 *  - the live connector of (provider_key, built_in) is looked up by its live_key; none: it is
 *    created under the id "builtin-<key>" (so replicas pick the same id and the same secret
 *    idempotency key). A create that loses the race (duplicate key) reads again and goes on
 *    as an update; an id held by a deleted connector's tombstone makes the next try use a
 *    fresh id;
 *  - an update writes only the fields the environment sets (client_id, redirect_uri, scopes
 *    when _SCOPES is set, endpoints for a configured base URL) and only when they differ;
 *  - the client secret is compared with the stored one (store Resolve, constant time, wiped)
 *    and rotated only when it differs, with the compared version as expected_version, so of
 *    concurrent rotations one wins and the others compare again and find it equal;
 *  - nothing changed: no write and no audit event. Otherwise one connector.bootstrapped event.
 * A bootstrapped connector is ACTIVE with an empty enabled_for: usable once an admin enables
 * it for teams or everyone ("*"), and nobody can connect before that.
 */
#include <stdio.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "services/oauth/oauth_internal.h"

#define OAUTH_BOOTSTRAP_TRIES 4

/* The connector a spec describes, as an admin would create it (arena memory). */
static Credex__V1__Connector *bootstrap_connector(oauth_ctx_t *x, const oauth_bootstrap_spec_t *s)
{
    Credex__V1__Connector *c = rpc_arena_alloc(x->arena, sizeof(*c));
    credex__v1__connector__init(c);
    c->provider_key = rpc_arena_strndup(x->arena, s->provider->key, strlen(s->provider->key));
    c->type = CREDEX__V1__CONNECTOR_TYPE__CONNECTOR_TYPE_BUILT_IN;
    c->display_name =
        rpc_arena_strndup(x->arena, s->provider->display_name, strlen(s->provider->display_name));
    c->client_id = rpc_arena_strndup(x->arena, s->client_id, strlen(s->client_id));
    c->redirect_uri = rpc_arena_strndup(x->arena, s->redirect_uri, strlen(s->redirect_uri));
    char *scopes = rpc_arena_strndup(x->arena, s->scopes, strlen(s->scopes));
    c->scopes = rpc_arena_alloc(x->arena, OAUTH_SCOPES_MAX * sizeof(char *));
    char *save = NULL;
    for (char *t = strtok_r(scopes, " ", &save); t && c->n_scopes < OAUTH_SCOPES_MAX;
         t = strtok_r(NULL, " ", &save))
        c->scopes[c->n_scopes++] = t;
    if (s->base_url[0] && s->provider->base_url_configurable) {
        /* A self-managed instance (GITLAB_BASE_URL): its base URL is the connector's
         * endpoints.issuer_url, under which validation builds every endpoint. */
        c->endpoints = rpc_arena_alloc(x->arena, sizeof(*c->endpoints));
        credex__v1__connector_endpoints__init(c->endpoints);
        c->endpoints->issuer_url = rpc_arena_strndup(x->arena, s->base_url, strlen(s->base_url));
    }
    return c;
}

static bool bootstrap_audit(oauth_ctx_t *x, const oauth_stored_t *s, const char *action,
                            const char *changed, cx_error_t *err)
{
    char sv[16];
    snprintf(sv, sizeof(sv), "%u", s->pb->scopes_version);
    oauth_attr_t a[] = {{"provider_key", s->pb->provider_key},
                        {"type", "built_in"},
                        {"scopes_version", sv},
                        {"action", action},
                        {"changed_fields", changed}};
    return oauth_audit(x, "connector.bootstrapped", s->pb->connector_id, CX_OK, a,
                       sizeof(a) / sizeof(a[0]), err);
}

/* Update path: the fields the environment sets, then the secret. */
static bool bootstrap_update(oauth_ctx_t *x, const oauth_bootstrap_spec_t *spec,
                             const Credex__V1__Connector *in, oauth_stored_t *cur, cx_error_t *err)
{
    char *mask[4] = {"client_id", "redirect_uri"};
    size_t nmask = 2;
    if (spec->scopes[0])
        mask[nmask++] = "scopes";
    if (in->endpoints)
        mask[nmask++] = "endpoints";
    const char *changed[16];
    size_t nchanged = 0;
    oauth_stored_t s;
    bool rotated = false;
    if (!oauth_connector_update(x, cur, in, mask, nmask, NULL, 0, &s, changed, &nchanged, err) ||
        !oauth_connector_secret_ensure(x, &s, spec->client_secret, spec->client_secret_len,
                                       &rotated, err))
        return false;
    if (rotated)
        changed[nchanged++] = "client_secret";
    if (nchanged == 0)
        return true;
    char list[256];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < nchanged; i++) {
        int w = snprintf(list + off, sizeof(list) - off, "%s%s", i ? "," : "", changed[i]);
        if (w > 0 && (size_t)w < sizeof(list) - off)
            off += (size_t)w;
    }
    cx_log_info(x->correlation_id, "oauth.connector_bootstrapped",
                CX_LOG_STR("connector_id", s.pb->connector_id),
                CX_LOG_STR("provider_key", s.pb->provider_key), CX_LOG_STR("action", "updated"),
                CX_LOG_STR("changed_fields", list));
    return bootstrap_audit(x, &s, "updated", list, err);
}

static bool bootstrap_one(oauth_ctx_t *x, const oauth_bootstrap_spec_t *spec, cx_error_t *err)
{
    const Credex__V1__Connector *in = bootstrap_connector(x, spec);
    char idbuf[96];
    snprintf(idbuf, sizeof(idbuf), "builtin-%s", spec->provider->key);
    const char *id = idbuf;
    bool create_lost = false;
    for (int attempt = 0; attempt < OAUTH_BOOTSTRAP_TRIES; attempt++) {
        oauth_stored_t cur;
        bool found = false;
        cx_error_t e;
        cx_error_clear(&e);
        if (!oauth_connector_find_live(x, in->provider_key, in->type, &cur, &found, err))
            return false;
        if (found && bootstrap_update(x, spec, in, &cur, &e))
            return true;
        if (!found) {
            /* A create that lost while no connector is live lost to a tombstone holding the
             * deterministic id: a fresh id then. */
            if (create_lost)
                id = NULL;
            if (oauth_connector_create(x, id, in, spec->client_secret, spec->client_secret_len,
                                       CREDEX__V1__CONNECTOR_STATUS__CONNECTOR_STATUS_ACTIVE, &cur,
                                       &e)) {
                cx_log_info(x->correlation_id, "oauth.connector_bootstrapped",
                            CX_LOG_STR("connector_id", cur.pb->connector_id),
                            CX_LOG_STR("provider_key", cur.pb->provider_key),
                            CX_LOG_STR("action", "created"));
                return bootstrap_audit(x, &cur, "created", "", err);
            }
            create_lost = true;
        }
        /* Another replica wrote first (conflict): read again and compare with what it wrote. */
        if (e.code != CX_ERR_CONFLICT) {
            cx_error_copy(err, &e);
            return false;
        }
    }
    return cx_error_set(err, CX_ERR_CONFLICT, "the connector kept changing concurrently");
}

bool oauth_bootstrap_run(oauth_t *o, cx_config_getenv_fn fn, void *ctx, cx_error_t *err)
{
    oauth_bootstrap_spec_t *specs = NULL;
    size_t n = 0;
    cx_error_t e;
    cx_error_clear(&e);
    if (!oauth_bootstrap_specs_read(fn, ctx, &specs, &n, &e))
        return cx_error_set(err, e.code, "CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS: %s", e.message);
    bool ok = true;
    for (size_t i = 0; ok && i < n; i++) {
        oauth_ctx_t x;
        memset(&x, 0, sizeof(x));
        x.o = o;
        x.arena = rpc_arena_new(16384);
        rpc_correlation_id_new(x.correlation_id, sizeof(x.correlation_id));
        x.actor = OAUTH_PLATFORM_ACTOR;
        x.service_id = "oauth";
        x.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
        x.admin = true;
        ok = bootstrap_one(&x, &specs[i], &e);
        oauth_ctx_done(&x);
        rpc_arena_free(x.arena);
        if (!ok)
            cx_error_set(err, e.code, "bootstrap of connector %s failed: %s",
                         specs[i].provider->key, e.message);
    }
    if (ok)
        cx_log_info(NULL, "oauth.bootstrap_done", CX_LOG_INT("connectors", (int64_t)n));
    oauth_bootstrap_specs_free(specs, n);
    return ok;
}
