/* oauth: setup and cleanup (state, clients, registration, start-up bootstrap). Connectors is
 * served by connectors.c, Connections by connections.c, ProviderTokens by tokens.c. */
#include <stdlib.h>
#include <string.h>

#include "common/log/cx_log.h"
#include "common/mdb/mdb_cache.h"
#include "common/metrics/cx_metrics.h"
#include "common/svc/svc.h"
#include "credex/v1/oauth.pb-c.h"
#include "services/oauth/oauth.h"
#include "services/oauth/oauth_internal.h"

/* Everything reaches oauth through the policy gateway. */
static const char *const gateway_only[] = {"gateway", NULL};

/* A comma list of the configuration as common/http splits it; NULL for an empty list (the
 * policy's "none": an empty allow-list would refuse every host). */
static bool oauth_list_split(const char *csv, char ***out, cx_error_t *err)
{
    char **list = cx_http_list_split(csv, CX_HTTP_SSRF_LIST_MAX, err);
    if (!list)
        return false;
    if (!list[0]) {
        cx_http_list_free(list);
        list = NULL;
    }
    *out = list;
    return true;
}

/* The provider client: common/http under the SSRF policy, with the CREDEX_OAUTH_* limits. */
static bool oauth_http_open(oauth_t *o, cx_error_t *err)
{
    const cx_config_t *cfg = o->cfg;
    cx_http_ssrf_t ssrf = {.allow_hosts = (const char *const *)o->allow_hosts,
                           .connect_to = (const char *const *)o->connect_to};
    cx_http_options_t ho = {.name = "OAuth provider",
                            .metrics_target = "oauth_provider",
                            .ca_file = cfg->oauth_ca_file,
                            .timeout_ms = cfg->oauth_http_timeout_ms,
                            .max_response_bytes = cfg->oauth_http_max_response_bytes,
                            .ssrf = &ssrf};
    o->http = cx_http_new(&ho, err);
    return o->http != NULL;
}

/* oauth serves only while its database answers (as store does). */
static bool oauth_health_probe(void *ctx)
{
    oauth_t *o = ctx;
    cx_error_t err;
    return mdb_ping(o->db, &err);
}

/* A document cache stopped or started answering (its watcher thread). */
static void oauth_cache_state(void *ctx, bool enabled, const cx_error_t *why)
{
    const char *coll = ctx;
    if (enabled)
        cx_log_info(NULL, "oauth.cache_enabled", CX_LOG_STR("collection", coll));
    else
        cx_log_warn(NULL, "oauth.cache_disabled", CX_LOG_STR("collection", coll),
                    CX_LOG_STR("reason", why ? cx_code_reason(why->code) : "unknown"));
}

/* The exchange's reads of connector and connection documents, with the store's metadata
 * cache settings (the same staleness bound for every read on the retrieval paths). */
static bool oauth_caches_open(oauth_t *o, cx_error_t *err)
{
    const cx_config_t *cfg = o->cfg;
    if (!cfg->meta_cache_max_entries)
        return true;
    static const char *const colls[] = {MDB_COLL_OAUTH_CONNECTORS, MDB_COLL_CONNECTIONS};
    mdb_cache_t **dst[] = {&o->connectors_cache, &o->connections_cache};
    for (size_t i = 0; i < 2; i++) {
        mdb_cache_options_t co = {.coll = colls[i],
                                  .max_entries = cfg->meta_cache_max_entries,
                                  .bound_ms = cfg->meta_cache_bound_ms,
                                  .poll_ms = cfg->meta_cache_poll_ms,
                                  .read = MDB_CACHE_READ_AUTO,
                                  .on_state = oauth_cache_state,
                                  .state_ctx = (void *)colls[i]};
        if (!mdb_cache_new(dst[i], o->db, &co, err))
            return false;
    }
    return oauth_picks_new(&o->picks, cfg->meta_cache_bound_ms, err);
}

void oauth_cleanup(void *state)
{
    oauth_t *o = state;
    if (!o)
        return;
    mdb_cache_free(o->connectors_cache);
    mdb_cache_free(o->connections_cache);
    oauth_picks_free(o->picks);
    oauth_tokens_cleanup(o);
    cx_http_free(o->http);
    rpc_client_free(o->store);
    mdb_close(o->db);
    cx_http_list_free(o->allow_hosts);
    cx_http_list_free(o->connect_to);
    free(o);
}

void oauth_refresh_metric(const char *outcome)
{
    static const char *const outcomes[] = {"refreshed",          "fenced",       "revoked",
                                           "reconsent_required", "rate_limited", "unavailable",
                                           "failed_precondition"};
    static const char *const keys[] = {"outcome"};
    const char *v = "other";
    for (size_t i = 0; i < sizeof(outcomes) / sizeof(outcomes[0]); i++)
        if (outcome != NULL && strcmp(outcome, outcomes[i]) == 0)
            v = outcomes[i];
    cx_metrics_add(cx_metrics_counter("credex_oauth_refresh_total",
                                      "Provider token refreshes by outcome.", keys, &v, 1),
                   1);
}

bool oauth_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    *state = NULL;
    oauth_t *o = calloc(1, sizeof(*o));
    if (!o)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    o->cfg = cfg;
    mdb_options_t mo = {.uri = cfg->mongo_uri,
                        .db = cfg->mongo_db,
                        .timeout_ms = cfg->mongo_timeout_ms,
                        .write_majority = cfg->mongo_write_majority,
                        .pool_max = cfg->mongo_pool_max,
                        .app_name = "credex-oauth"};
    rpc_tls_t tls = svc_tls(cfg);
    if (!mdb_open(&o->db, &mo, err) ||
        !(o->store = rpc_client_new(cfg->addr[CX_SVC_STORE], "store", &tls, err)) ||
        !oauth_list_split(cfg->oauth_allowed_hosts, &o->allow_hosts, err) ||
        !oauth_list_split(cfg->oauth_test_connect_to, &o->connect_to, err) ||
        !oauth_http_open(o, err) || !oauth_tokens_setup(o, err) || !oauth_caches_open(o, err))
        goto fail;
    /* Filled at run time because the method count lives in connectors.c; must outlive the
     * server, hence static. */
    static rpc_service_def_t connectors_def;
    connectors_def = (rpc_service_def_t){.desc = &credex__v1__connectors__descriptor,
                                         .impls = oauth_connectors_impls,
                                         .nimpls = oauth_connectors_nimpls,
                                         .allowed_peers = gateway_only,
                                         .unimplemented_note = "not implemented"};
    static rpc_service_def_t connections_def;
    connections_def = (rpc_service_def_t){.desc = &credex__v1__connections__descriptor,
                                          .impls = oauth_connections_impls,
                                          .nimpls = oauth_connections_nimpls,
                                          .allowed_peers = gateway_only,
                                          .unimplemented_note = "not implemented"};
    static rpc_service_def_t tokens_def;
    tokens_def = (rpc_service_def_t){.desc = &credex__v1__provider_tokens__descriptor,
                                     .impls = oauth_tokens_impls,
                                     .nimpls = oauth_tokens_nimpls,
                                     .allowed_peers = gateway_only,
                                     .unimplemented_note = "not implemented"};
    if (!rpc_server_add_service(srv, &connectors_def, err) ||
        !rpc_server_add_service(srv, &connections_def, err) ||
        !rpc_server_add_service(srv, &tokens_def, err))
        goto fail;
    rpc_server_set_health_probe(srv, "credex.v1.Connectors", oauth_health_probe, o);
    /* Before the server listens: a replica is never healthy with a half-applied bootstrap, and
     * a failed one stops the process (fail closed) with the variable or dependency named. With
     * credentials disabled store refuses every write, so there is nothing to bootstrap into. */
    if (cfg->bootstrap_oauth_connectors && !cfg->credentials_enabled)
        cx_log_warn(NULL, "oauth.bootstrap_skipped",
                    CX_LOG_STR("reason", "CAIPE_CREDENTIALS_ENABLED=false"));
    else if (cfg->bootstrap_oauth_connectors && !oauth_bootstrap_run(o, NULL, NULL, err))
        goto fail;
    *state = o;
    return true;
fail:
    oauth_cleanup(o);
    return false;
}
