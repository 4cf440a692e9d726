/* mdb_lease: see mdb_lease.h. */
#include "common/mdb/mdb_lease.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* "<key>/<20 digits>": the fixed-width suffix keeps _ids of different keys apart. */
#define MDB_LEASE_ID_MAX (MDB_LEASE_KEY_MAX + 1 + 20 + 1)

/* The newest lease document of a key, as far as the lease needs it. */
typedef struct mdb_lease_doc {
    bool found;
    uint64_t epoch;
    int64_t expires_at_ms;
    char holder[MDB_LEASE_HOLDER_MAX + 1];
} mdb_lease_doc_t;

static bool mdb_lease_args(const char *key, cx_error_t *err)
{
    if (!key || !key[0] || strlen(key) > MDB_LEASE_KEY_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "lease: bad key");
    return true;
}

static void mdb_lease_id(char *buf, size_t bufsz, const char *key, uint64_t epoch)
{
    snprintf(buf, bufsz, "%s/%020" PRIu64, key, epoch);
}

static bool mdb_lease_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    mdb_lease_doc_t *d = ctx;
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, "epoch") || !BSON_ITER_HOLDS_INT64(&it) ||
        bson_iter_int64(&it) < 1)
        return cx_error_set(err, CX_ERR_INTERNAL, "lease: malformed document (epoch)");
    d->epoch = (uint64_t)bson_iter_int64(&it);
    if (!bson_iter_init_find(&it, doc, "expires_at") || !BSON_ITER_HOLDS_DATE_TIME(&it))
        return cx_error_set(err, CX_ERR_INTERNAL, "lease: malformed document (expires_at)");
    d->expires_at_ms = bson_iter_date_time(&it);
    if (!bson_iter_init_find(&it, doc, "holder") || !BSON_ITER_HOLDS_UTF8(&it))
        return cx_error_set(err, CX_ERR_INTERNAL, "lease: malformed document (holder)");
    snprintf(d->holder, sizeof(d->holder), "%s", bson_iter_utf8(&it, NULL));
    d->found = true;
    return true;
}

/* The newest epoch of key (d->found false when the key has none). */
static bool mdb_lease_newest(mdb_t *m, mongoc_client_t *c, const char *key, mdb_lease_doc_t *d,
                             cx_error_t *err)
{
    bson_t filter = BSON_INITIALIZER;
    memset(d, 0, sizeof(*d));
    BSON_APPEND_UTF8(&filter, "key", key);
    bool ok = mdb_find_page(m, c, MDB_COLL_LEASES, &filter, "epoch", "_id", 1, mdb_lease_row, d,
                            NULL, err);
    bson_destroy(&filter);
    return ok;
}

/* Insert epoch of key. *won false: another process inserted it first. */
static bool mdb_lease_insert(mdb_t *m, mongoc_client_t *c, const char *key, const char *holder,
                             uint64_t epoch, int64_t expires_at_ms, bool *won, cx_error_t *err)
{
    char id[MDB_LEASE_ID_MAX];
    cx_error_t ierr;
    bson_t doc = BSON_INITIALIZER;
    mdb_lease_id(id, sizeof(id), key, epoch);
    BSON_APPEND_UTF8(&doc, "_id", id);
    BSON_APPEND_UTF8(&doc, "key", key);
    BSON_APPEND_INT64(&doc, "epoch", (int64_t)epoch);
    BSON_APPEND_UTF8(&doc, "holder", holder);
    BSON_APPEND_DATE_TIME(&doc, "expires_at", expires_at_ms);
    bool ok = mdb_insert_one(m, c, MDB_COLL_LEASES, &doc, &ierr);
    bson_destroy(&doc);
    if (ok || ierr.code == CX_ERR_CONFLICT) {
        *won = ok;
        return true;
    }
    if (err)
        *err = ierr;
    return false;
}

/* Epochs of key older than epoch. Best effort: a leftover is swept by the next acquire. */
static void mdb_lease_sweep(mdb_t *m, mongoc_client_t *c, const char *key, uint64_t epoch)
{
    cx_error_t ignored;
    bson_t filter = BSON_INITIALIZER, lt;
    BSON_APPEND_UTF8(&filter, "key", key);
    BSON_APPEND_DOCUMENT_BEGIN(&filter, "epoch", &lt);
    BSON_APPEND_INT64(&lt, "$lt", (int64_t)epoch);
    bson_append_document_end(&filter, &lt);
    (void)mdb_delete_many(m, c, MDB_COLL_LEASES, &filter, &ignored);
    bson_destroy(&filter);
}

static void mdb_lease_refused(const mdb_lease_doc_t *d, mdb_lease_grant_t *g)
{
    g->acquired = false;
    g->token = d->found ? d->epoch : 0;
    g->expires_at_ms = d->found ? d->expires_at_ms : 0;
}

bool mdb_lease_acquire(mdb_t *m, const char *key, const char *holder, unsigned ttl_ms,
                       mdb_lease_grant_t *out, cx_error_t *err)
{
    mdb_lease_doc_t d;
    mdb_lease_grant_t g = {0};
    bool ok = false, won = false;
    if (!mdb_lease_args(key, err))
        return false;
    if (!holder || !holder[0] || strlen(holder) > MDB_LEASE_HOLDER_MAX || ttl_ms < 1 ||
        ttl_ms > MDB_LEASE_TTL_MAX_MS)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "lease: bad holder or ttl");
    mongoc_client_t *c = mdb_client_pop(m, err);
    if (!c)
        return false;
    if (!mdb_lease_newest(m, c, key, &d, err))
        goto out;
    if (d.found && d.expires_at_ms > mdb_now_ms() && strcmp(d.holder, holder) != 0) {
        mdb_lease_refused(&d, &g);
        ok = true;
        goto out;
    }
    if (d.epoch >= (uint64_t)INT64_MAX) {
        cx_error_set(err, CX_ERR_INTERNAL, "lease: epochs exhausted");
        goto out;
    }
    uint64_t epoch = d.epoch + 1;
    int64_t expires_at = mdb_now_ms() + (int64_t)ttl_ms;
    if (!mdb_lease_insert(m, c, key, holder, epoch, expires_at, &won, err))
        goto out;
    /* Lost the insert, or won an epoch that a stalled read made stale (see the header): either
     * way the newest document says who holds the lease. */
    if (!mdb_lease_newest(m, c, key, &d, err))
        goto out;
    if (won && d.found && d.epoch == epoch) {
        g.acquired = true;
        g.token = epoch;
        g.expires_at_ms = expires_at;
        mdb_lease_sweep(m, c, key, epoch);
    } else {
        mdb_lease_refused(&d, &g);
    }
    ok = true;
out:
    mdb_client_push(m, c);
    if (ok)
        *out = g;
    return ok;
}

bool mdb_lease_release(mdb_t *m, const char *key, uint64_t token, cx_error_t *err)
{
    char id[MDB_LEASE_ID_MAX];
    bson_t sel = BSON_INITIALIZER, upd = BSON_INITIALIZER, set;
    if (!mdb_lease_args(key, err))
        return false;
    mongoc_client_t *c = mdb_client_pop(m, err);
    if (!c)
        return false;
    /* By _id only: concurrent releases of one epoch all write the same value, so FerretDB's
     * non-atomic updates cannot make them disagree. */
    mdb_lease_id(id, sizeof(id), key, token);
    BSON_APPEND_UTF8(&sel, "_id", id);
    BSON_APPEND_DOCUMENT_BEGIN(&upd, "$set", &set);
    BSON_APPEND_DATE_TIME(&set, "expires_at", 0);
    bson_append_document_end(&upd, &set);
    bool ok = mdb_update_one(m, c, MDB_COLL_LEASES, &sel, &upd, NULL, err);
    bson_destroy(&upd);
    bson_destroy(&sel);
    mdb_client_push(m, c);
    return ok;
}

bool mdb_lease_check(mdb_t *m, const char *key, uint64_t token, bool *valid, cx_error_t *err)
{
    mdb_lease_doc_t d;
    if (!mdb_lease_args(key, err))
        return false;
    mongoc_client_t *c = mdb_client_pop(m, err);
    if (!c)
        return false;
    bool ok = mdb_lease_newest(m, c, key, &d, err);
    mdb_client_push(m, c);
    if (ok)
        *valid = d.found && d.epoch == token && d.expires_at_ms > mdb_now_ms();
    return ok;
}
