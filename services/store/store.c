/* store: registration of credex.v1.CredentialStore and the process-wide store state. */
#include "services/store/store.h"

#include <stdlib.h>

#include "common/log/cx_log.h"
#include "common/svc/svc.h"
#include "credex/v1/store.pb-c.h"
#include "services/store/store_internal.h"

/* Deny before decrypt is structural: only the policy gateway (and oauth, for connector client
 * secrets and provider token sets) may reach the store at all. */
static const char *const store_peers[] = {"gateway", "oauth", NULL};

/* The metadata cache started or stopped answering (its watcher thread): said once per change,
 * so that an operator sees when every Resolve reads the database and why. */
static void store_meta_state(void *ctx, bool enabled, const cx_error_t *why)
{
    const store_t *st = ctx;
    if (enabled)
        cx_log_info(NULL, "store.metadata_cache_enabled",
                    CX_LOG_INT("bound_ms", st->cfg->meta_cache_bound_ms),
                    CX_LOG_INT("poll_ms", st->cfg->meta_cache_poll_ms));
    else
        cx_log_warn(NULL, "store.metadata_cache_disabled",
                    CX_LOG_STR("reason", cx_code_reason(why->code)),
                    CX_LOG_STR("detail", why->message));
}

store_t *store_new(const cx_config_t *cfg, const store_keys_ops_t *keys, cx_error_t *err)
{
    store_t *st = calloc(1, sizeof(*st));
    if (!st) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    st->cfg = cfg;
    mdb_options_t mo = {.uri = cfg->mongo_uri,
                        .db = cfg->mongo_db,
                        .timeout_ms = cfg->mongo_timeout_ms,
                        .write_majority = cfg->mongo_write_majority,
                        .pool_max = cfg->mongo_pool_max,
                        .app_name = "credex-store"};
    if (!mdb_open(&st->db, &mo, err))
        goto fail;
    if (keys) {
        st->keys = *keys;
    } else {
        rpc_tls_t tls = svc_tls(cfg);
        st->keywrap = rpc_client_new(cfg->addr[CX_SVC_KEYWRAP], "keywrap", &tls, err);
        if (!st->keywrap)
            goto fail;
        st->keys = store_keys_keywrap(st->keywrap);
    }
    st->dek = store_dek_cache_new(cfg->dek_cache_ttl_ms, cfg->dek_cache_max_uses,
                                  cfg->dek_cache_max_entries);
    if (!st->dek) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory (DEK cache)");
        goto fail;
    }
    st->payloads = store_payload_cache_new(
        cfg->payload_cache_ttl_ms, cfg->payload_cache_max_entries, STORE_PAYLOAD_CACHE_MAX_BYTES);
    st->audit = store_audit_batch_new(cfg->audit_batch_max);
    if (!st->payloads || !st->audit) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory (payload cache, audit batch)");
        goto fail;
    }
    if (cfg->meta_cache_max_entries) {
        mdb_cache_options_t co = {.coll = MDB_COLL_SECRET_REFS,
                                  .max_entries = cfg->meta_cache_max_entries,
                                  .bound_ms = cfg->meta_cache_bound_ms,
                                  .poll_ms = cfg->meta_cache_poll_ms,
                                  .read = MDB_CACHE_READ_AUTO,
                                  .on_state = store_meta_state,
                                  .state_ctx = st};
        if (!mdb_cache_new(&st->meta, st->db, &co, err))
            goto fail;
    }
    return st;
fail:
    store_free(st);
    return NULL;
}

/* The metadata cache's counters, once at shutdown: what it saved (hits), what it cost the
 * database (misses, watcher reads) and how often it had to stop. */
static void store_meta_report(mdb_cache_t *meta)
{
    mdb_cache_stats_t s;
    if (!meta)
        return;
    mdb_cache_stats(meta, &s);
    cx_log_info(NULL, "store.metadata_cache_stats", CX_LOG_INT("hits", s.hits),
                CX_LOG_INT("misses", s.misses), CX_LOG_INT("fills", s.fills),
                CX_LOG_INT("stale_fills", s.stale), CX_LOG_INT("full", s.full),
                CX_LOG_INT("evictions", s.evictions), CX_LOG_INT("expired", s.expired),
                CX_LOG_INT("rounds", s.rounds), CX_LOG_INT("failed_rounds", s.failed_rounds),
                CX_LOG_INT("watcher_reads", s.reads), CX_LOG_INT("watcher_queries", s.queries),
                CX_LOG_STR("read_mode", s.mode == MDB_CACHE_READ_IN     ? "in"
                                        : s.mode == MDB_CACHE_READ_EACH ? "each"
                                                                        : "unknown"));
}

void store_free(store_t *st)
{
    if (!st)
        return;
    store_meta_report(st->meta);
    mdb_cache_free(st->meta); /* its watcher reads through st->db */
    store_dek_cache_free(st->dek);
    store_payload_cache_free(st->payloads);
    store_audit_batch_free(st->audit);
    rpc_client_free(st->keywrap);
    mdb_close(st->db);
    free(st);
}

/* The store serves only while its database answers: health Checks ping it (at most every
 * 500 ms, bounded by CREDEX_MONGO_TIMEOUT_MS), so the gateway's credential health and any
 * readiness probe fail closed during a database outage. */
static bool store_health_probe(void *ctx)
{
    store_t *st = ctx;
    cx_error_t err;
    return mdb_ping(st->db, &err);
}

bool store_register(rpc_server_t *srv, store_t *st, cx_error_t *err)
{
    /* Filled at run time because the method count lives in dispatch.c; must outlive the
     * server, hence static. */
    static rpc_service_def_t def;
    def = (rpc_service_def_t){
        .desc = &credex__v1__credential_store__descriptor,
        .impls = store_method_impls,
        .nimpls = store_method_nimpls,
        .allowed_peers = store_peers,
        .unimplemented_note = "planned: a later issue (migration preview)",
        .handles_bad_input = true, /* refused and audited by the dispatch */
    };
    rpc_server_set_health_probe(srv, "credex.v1.CredentialStore", store_health_probe, st);
    return rpc_server_add_service(srv, &def, err);
}

bool store_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err)
{
    *state = NULL;
    store_t *st = store_new(cfg, NULL, err);
    if (!st)
        return false;
    if (!store_register(srv, st, err)) {
        store_free(st);
        return false;
    }
    *state = st;
    return true;
}

void store_cleanup(void *state)
{
    store_free(state);
}
