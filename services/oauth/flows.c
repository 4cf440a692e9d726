/*
 * oauth flows: the oauth_flows collection of connect flows in progress (see oauth_internal.h
 * and docs/DATA_MODEL.md). A flow is keyed by the SHA-256 (hex) of its OAuth state, so a
 * database reader learns no state that a callback would accept. It is single use: the callback
 * deletes it by _id and only the delete that removed it proceeds (FerretDB does not make
 * conditional updates atomic; a delete by _id is). Expired flows are refused by the caller and
 * swept when a new flow starts, at most once a minute per process.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/sha.h>

#include "common/log/cx_log.h"
#include "services/oauth/oauth_internal.h"

static void oauth_flow_key(const char *state, char hex[SHA256_DIGEST_LENGTH * 2 + 1])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)state, strlen(state), d);
    for (size_t i = 0; i < sizeof(d); i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

bool oauth_flow_put(oauth_ctx_t *x, const char *state, const oauth_flow_t *f, cx_error_t *err)
{
    char key[SHA256_DIGEST_LENGTH * 2 + 1];
    oauth_flow_key(state, key);
    bson_t doc = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&doc, "_id", key);
    BSON_APPEND_UTF8(&doc, "user", f->user);
    BSON_APPEND_UTF8(&doc, "connector_id", f->connector_id);
    BSON_APPEND_UTF8(&doc, "connection_id", f->connection_id);
    BSON_APPEND_UTF8(&doc, "provider_key", f->provider_key);
    BSON_APPEND_UTF8(&doc, "redirect_uri", f->redirect_uri);
    BSON_APPEND_UTF8(&doc, "verifier", f->verifier);
    BSON_APPEND_UTF8(&doc, "nonce", f->nonce);
    BSON_APPEND_UTF8(&doc, "return_to", f->return_to);
    BSON_APPEND_DATE_TIME(&doc, "expires_at", f->expires_at_ms);
    BSON_APPEND_DATE_TIME(&doc, "created_at", mdb_now_ms());
    bool ok =
        oauth_connect(x, err) && mdb_insert_one(x->o->db, x->c, MDB_COLL_OAUTH_FLOWS, &doc, err);
    bson_destroy(&doc);
    return ok;
}

bool oauth_flow_find(oauth_ctx_t *x, const char *state, oauth_flow_t *out, bool *found,
                     cx_error_t *err)
{
    char key[SHA256_DIGEST_LENGTH * 2 + 1];
    oauth_flow_key(state, key);
    bson_t filter = BSON_INITIALIZER, doc;
    BSON_APPEND_UTF8(&filter, "_id", key);
    *found = false;
    bool ok = oauth_connect(x, err) &&
              mdb_find_one(x->o->db, x->c, MDB_COLL_OAUTH_FLOWS, &filter, &doc, found, err);
    bson_destroy(&filter);
    if (!ok || !*found)
        return ok;
    oauth_reader_t r = {.x = x, .doc = &doc};
    oauth_flow_t f;
    f.user = oauth_rd_str(&r, "user");
    f.connector_id = oauth_rd_str(&r, "connector_id");
    f.connection_id = oauth_rd_str(&r, "connection_id");
    f.provider_key = oauth_rd_str(&r, "provider_key");
    f.redirect_uri = oauth_rd_str(&r, "redirect_uri");
    f.verifier = oauth_rd_str(&r, "verifier");
    f.nonce = oauth_rd_str(&r, "nonce");
    f.return_to = oauth_rd_str(&r, "return_to");
    f.expires_at_ms = oauth_rd_date(&r, "expires_at");
    bson_destroy(&doc);
    if (r.bad) {
        *found = false;
        cx_log_error(x->correlation_id, "oauth.integrity_error", CX_LOG_STR("field", r.bad));
        return cx_error_set(err, CX_ERR_INTEGRITY, "stored flow is malformed (%s)", r.bad);
    }
    *out = f;
    return true;
}

bool oauth_flow_claim(oauth_ctx_t *x, const char *state, bool *claimed, cx_error_t *err)
{
    char key[SHA256_DIGEST_LENGTH * 2 + 1];
    oauth_flow_key(state, key);
    bson_t filter = BSON_INITIALIZER;
    BSON_APPEND_UTF8(&filter, "_id", key);
    *claimed = false;
    bool ok = oauth_connect(x, err) &&
              mdb_delete_one_counted(x->o->db, x->c, MDB_COLL_OAUTH_FLOWS, &filter, claimed, err);
    bson_destroy(&filter);
    return ok;
}

void oauth_flows_sweep(oauth_ctx_t *x)
{
    int64_t now = mdb_now_ms(), next = atomic_load(&x->o->next_sweep_ms);
    /* One caller per period wins the exchange and sweeps; the others go on at once. */
    if (now < next ||
        !atomic_compare_exchange_strong(&x->o->next_sweep_ms, &next, now + OAUTH_FLOW_SWEEP_MS))
        return;
    bson_t flows = BSON_INITIALIZER, pending = BSON_INITIALIZER, lt;
    cx_error_t err;
    BSON_APPEND_DOCUMENT_BEGIN(&flows, "expires_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now);
    bson_append_document_end(&flows, &lt);
    BSON_APPEND_UTF8(&pending, "state",
                     oauth_conn_state_name(CREDEX__V1__CONNECTION_STATE__CONNECTION_STATE_PENDING));
    BSON_APPEND_DOCUMENT_BEGIN(&pending, "created_at", &lt);
    BSON_APPEND_DATE_TIME(&lt, "$lt", now - OAUTH_PENDING_TTL_MS);
    bson_append_document_end(&pending, &lt);
    /* No cache outlives the delete: the connection cache confirms its entries against the
     * database within its bound, and a kept pick is read again, and checked live, on use. */
    if (!oauth_connect(x, &err) ||
        !mdb_delete_many(x->o->db, x->c, MDB_COLL_OAUTH_FLOWS, &flows, &err) ||
        !mdb_delete_many(x->o->db, x->c, MDB_COLL_CONNECTIONS, &pending, &err))
        cx_log_warn(x->correlation_id, "oauth.flow_sweep_failed",
                    CX_LOG_STR("reason", err.message));
    bson_destroy(&flows);
    bson_destroy(&pending);
}
