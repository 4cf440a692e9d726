/* mdb: see mdb.h. */
#include "common/mdb/mdb.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log/cx_log.h"
#include "common/metrics/cx_metrics.h"

/* The reason kept for "database is down: <why>": a driver message. */
#define MDB_WHY_MAX BSON_ERROR_BUFFER_SIZE

struct mdb {
    mongoc_client_pool_t *pool;
    mongoc_uri_t *probe_uri; /* the pool's URI with the prober's options */
    mongoc_write_concern_t *wc;
    char db[64];
    unsigned timeout_ms;
    /* The down state: `down` is read without the lock on every operation; the rest is under
     * mu. `epoch` counts failures noted by operations, so that a ping that began before one
     * cannot lift the state it set. */
    atomic_bool down;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t prober;
    bool stopping, wake;
    uint64_t epoch;
    char why[MDB_WHY_MAX];
};

static pthread_once_t mdb_once = PTHREAD_ONCE_INIT;

/* The driver's default handler prints free-form lines (even DEBUG) on stderr, which would mix
 * with our JSON lines: route warnings and worse through cx_log (which redacts credential-shaped
 * values) and drop the chatter. */
static void mdb_log_handler(mongoc_log_level_t level, const char *domain, const char *message,
                            void *user)
{
    (void)user;
    if (level > MONGOC_LOG_LEVEL_WARNING)
        return;
    /* FerretDB advertises sessions but has no endSessions, which the driver sends when a
     * client goes away; servers expire unused sessions anyway, so there is nothing to tell. */
    if (strstr(message, "\"endSessions\"") && strstr(message, "no such command"))
        return;
    cx_log_warn(NULL, "mdb.driver", CX_LOG_STR("domain", domain), CX_LOG_STR("message", message));
}

static void mdb_init_once(void)
{
    mongoc_log_set_handler(mdb_log_handler, NULL);
    mongoc_init();
}

void mdb_global_init(void)
{
    pthread_once(&mdb_once, mdb_init_once);
}

int64_t mdb_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the down state -------------------------------------------------------------------- */

/* Called with mu held. */
static void mdb_set_down_locked(mdb_t *m, const char *why)
{
    if (!atomic_load(&m->down))
        snprintf(m->why, sizeof(m->why), "%s", why);
    atomic_store(&m->down, true);
}

/* An operation could not reach the database: down at once, and the prober pings again now
 * (so that a false alarm, e.g. one broken pooled connection, lasts one round trip). */
static void mdb_note_outage(mdb_t *m, const bson_error_t *berr)
{
    pthread_mutex_lock(&m->mu);
    m->epoch++;
    mdb_set_down_locked(m, berr->message);
    m->wake = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
}

bool mdb_is_up(mdb_t *m)
{
    return !atomic_load(&m->down);
}

/* UNAVAILABLE while down, without touching the driver. */
static bool mdb_check_up(mdb_t *m, cx_error_t *err)
{
    if (!atomic_load(&m->down))
        return true;
    char why[MDB_WHY_MAX];
    pthread_mutex_lock(&m->mu);
    snprintf(why, sizeof(why), "%s", m->why);
    pthread_mutex_unlock(&m->mu);
    return cx_error_set(err, CX_ERR_UNAVAILABLE, "database is down: %s", why);
}

/* mdb_error_map plus the down state. Returns false. */
static bool mdb_fail(mdb_t *m, const bson_error_t *berr, const bson_t *reply, const char *what,
                     cx_error_t *err)
{
    if (mdb_error_is_outage(berr))
        mdb_note_outage(m, berr);
    return mdb_error_map(berr, reply, what, err);
}

/* One ping on *c (kept open between pings). A failure on a connection that had worked is
 * retried once on a fresh client: the server may have restarted between two pings, leaving a
 * dead socket behind. A fresh single-threaded client also avoids the driver's 5 s cooldown of
 * a server whose check failed, which would hold the next pings back. */
static bool mdb_probe_once(mdb_t *m, mongoc_client_t **c, char *why, size_t whysz)
{
    bson_error_t berr;
    bson_t cmd = BSON_INITIALIZER;
    bool ok = false;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        bool fresh = *c == NULL;
        if (fresh) {
            *c = mongoc_client_new_from_uri_with_error(m->probe_uri, &berr);
            if (!*c) {
                snprintf(why, whysz, "%s", berr.message);
                break;
            }
            mongoc_client_set_error_api(*c, MONGOC_ERROR_API_VERSION_2);
        }
        ok = mongoc_client_command_simple(*c, "admin", &cmd, NULL, NULL, &berr);
        if (!ok) {
            snprintf(why, whysz, "%s", berr.message);
            mongoc_client_destroy(*c);
            *c = NULL;
            if (fresh)
                break; /* a new connection failed: that is the answer */
        }
    }
    bson_destroy(&cmd);
    return ok;
}

static void mdb_wait_ms(mdb_t *m, unsigned ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    while (!m->stopping && !m->wake)
        if (pthread_cond_timedwait(&m->cv, &m->mu, &until) == ETIMEDOUT)
            break;
    m->wake = false;
}

static void *mdb_prober_main(void *arg)
{
    mdb_t *m = arg;
    mongoc_client_t *c = NULL;
    char why[MDB_WHY_MAX];
    pthread_mutex_lock(&m->mu);
    while (!m->stopping) {
        uint64_t epoch = m->epoch;
        pthread_mutex_unlock(&m->mu);
        bool ok = mdb_probe_once(m, &c, why, sizeof(why));
        pthread_mutex_lock(&m->mu);
        if (!ok) {
            mdb_set_down_locked(m, why);
        } else if (epoch == m->epoch) {
            atomic_store(&m->down, false);
        } else {
            continue; /* an operation failed meanwhile: ping again before lifting */
        }
        mdb_wait_ms(m, MDB_PROBE_INTERVAL_MS);
    }
    pthread_mutex_unlock(&m->mu);
    mongoc_client_destroy(c);
    return NULL;
}

/* ---- pool ------------------------------------------------------------------------------ */

/* Every wait the driver can do is bounded by the same budget: an outage must surface as
 * unavailable within the caller's deadline instead of hanging a worker thread. */
static bool mdb_uri_timeouts(mongoc_uri_t *uri, int32_t t)
{
    return mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, t) &&
           mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, t) &&
           mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, t);
}

/* Everything but the prober thread (not started, or joined). */
static void mdb_free(mdb_t *m)
{
    mongoc_client_pool_destroy(m->pool);
    mongoc_write_concern_destroy(m->wc);
    mongoc_uri_destroy(m->probe_uri);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    bson_free(m);
}

bool mdb_open(mdb_t **out, const mdb_options_t *opts, cx_error_t *err)
{
    bson_error_t berr;
    mongoc_uri_t *uri = NULL;
    mdb_t *m = NULL;

    if (!opts || !opts->uri || !opts->db || !opts->db[0] || strlen(opts->db) >= sizeof(m->db) ||
        opts->pool_max < 1 || opts->timeout_ms < 1)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb: bad options");
    mdb_global_init();
    /* The URI may carry a password: the driver's message could quote it, so it is dropped. */
    uri = mongoc_uri_new_with_error(opts->uri, &berr);
    if (!uri)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "CREDEX_MONGO_URI: not a valid URI");
    /* The pool's monitor looks at the server every 500 ms (the driver's minimum) instead of
     * every 10 s: it then drops the sockets of a server that went away before calls hit them,
     * and finds a server that came back within 500 ms of it listening. */
    int32_t t = (int32_t)opts->timeout_ms;
    if (!mdb_uri_timeouts(uri, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_WAITQUEUETIMEOUTMS, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, (int32_t)opts->pool_max) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_HEARTBEATFREQUENCYMS, 500)) {
        mongoc_uri_destroy(uri);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb: cannot set URI options");
    }
    if (opts->app_name)
        mongoc_uri_set_appname(uri, opts->app_name);

    m = bson_malloc0(sizeof(*m));
    snprintf(m->db, sizeof(m->db), "%s", opts->db);
    m->timeout_ms = opts->timeout_ms;
    atomic_init(&m->down, false);
    pthread_mutex_init(&m->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    /* The prober's client is single-threaded: one selection attempt per ping (pooled clients
     * ignore serverSelectionTryOnce and would retry for the whole timeout). */
    m->probe_uri = mongoc_uri_copy(uri);
    mongoc_uri_set_option_as_bool(m->probe_uri, MONGOC_URI_SERVERSELECTIONTRYONCE, true);
    m->pool = mongoc_client_pool_new_with_error(uri, &berr);
    mongoc_uri_destroy(uri);
    if (!m->pool) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb: cannot create the client pool");
        goto fail;
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    m->wc = mongoc_write_concern_new();
    if (opts->write_majority)
        mongoc_write_concern_set_wmajority(m->wc, (int32_t)opts->timeout_ms);
    else
        mongoc_write_concern_set_w(m->wc, 1);
    if (pthread_create(&m->prober, NULL, mdb_prober_main, m) != 0) {
        cx_error_set(err, CX_ERR_INTERNAL, "mdb: cannot start the prober thread");
        goto fail;
    }
    *out = m;
    return true;
fail:
    mdb_free(m);
    return false;
}

void mdb_close(mdb_t *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->prober, NULL);
    mdb_free(m);
}

const char *mdb_db_name(const mdb_t *m)
{
    return m->db;
}

unsigned mdb_timeout_ms(const mdb_t *m)
{
    return m->timeout_ms;
}

mongoc_client_t *mdb_client_pop(mdb_t *m, cx_error_t *err)
{
    if (!mdb_check_up(m, err))
        return NULL;
    /* waitQueueTimeoutMS bounds this wait; NULL means the pool stayed exhausted. */
    mongoc_client_t *c = mongoc_client_pool_pop(m->pool);
    if (!c)
        cx_error_set(err, CX_ERR_UNAVAILABLE, "database: connection pool exhausted");
    return c;
}

void mdb_client_push(mdb_t *m, mongoc_client_t *c)
{
    if (m && c)
        mongoc_client_pool_push(m->pool, c);
}

mongoc_collection_t *mdb_collection(mdb_t *m, mongoc_client_t *c, const char *name)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(c, m->db, name);
    mongoc_collection_set_write_concern(coll, m->wc);
    return coll;
}

bool mdb_ping(mdb_t *m, cx_error_t *err)
{
    bson_error_t berr;
    bson_t cmd = BSON_INITIALIZER;
    bool ok = false;
    mongoc_client_t *c = mdb_client_pop(m, err);
    if (!c)
        goto out;
    BSON_APPEND_INT32(&cmd, "ping", 1);
    ok = mongoc_client_command_simple(c, "admin", &cmd, NULL, NULL, &berr);
    if (!ok)
        mdb_fail(m, &berr, NULL, "database ping", err);
out:
    bson_destroy(&cmd);
    mdb_client_push(m, c);
    return ok;
}

/* ---- operations ------------------------------------------------------------------------ */

/* One database call's metrics: the collection (a literal of the caller), the operation, the
 * result as a reason code. */
static void mdb_metric(const char *coll, const char *op, uint64_t t0, bool ok,
                       const cx_error_t *err)
{
    cx_metrics_client_call(CX_METRICS_DB, coll, op,
                           ok || err == NULL ? "ok" : cx_code_reason(err->code),
                           cx_metrics_now_us() - t0);
}

static int64_t mdb_reply_count(const bson_t *reply, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, reply, key) &&
        (BSON_ITER_HOLDS_INT32(&it) || BSON_ITER_HOLDS_INT64(&it)))
        return bson_iter_as_int64(&it);
    return -1;
}

static bool mdb_find_one_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                            bson_t *out, bool *found, cx_error_t *err)
{
    const bson_t *doc;
    bson_error_t berr;
    bson_t opts = BSON_INITIALIZER;
    bool have = false;
    if (!mdb_check_up(m, err))
        return false;
    BSON_APPEND_INT64(&opts, "limit", 1);
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, &opts, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        bson_copy_to(doc, out); /* (a bson_t cannot be moved by assignment) */
        have = true;
    }
    bool ok = !mongoc_cursor_error(cur, &berr);
    if (!ok) {
        if (have)
            bson_destroy(out);
        mdb_fail(m, &berr, NULL, "database read", err);
    } else {
        *found = have;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    bson_destroy(&opts);
    return ok;
}

bool mdb_find_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter, bson_t *out,
                  bool *found, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_find_one_do(m, c, coll, filter, out, found, err);
    mdb_metric(coll, "find", t0, ok, err);
    return ok;
}

static bool mdb_insert_one_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *doc,
                              cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    bool ok = mongoc_collection_insert_one(col, doc, NULL, &reply, &berr);
    if (!ok)
        mdb_fail(m, &berr, &reply, "database write", err);
    bson_destroy(&reply);
    mongoc_collection_destroy(col);
    return ok;
}

bool mdb_insert_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *doc,
                    cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_insert_one_do(m, c, coll, doc, err);
    mdb_metric(coll, "insert", t0, ok, err);
    return ok;
}

/* What is known of an ordered insert that failed (see mdb_insert_many). Client-side
 * validation refuses before sending anything; a write error at index k (and no write concern
 * error) with k documents inserted means 0..k-1 written, k refused, k+1.. never tried; anything
 * else (timeouts, network, write concern) leaves the batch's outcome unknown. */
static size_t mdb_insert_refused(const bson_error_t *berr, const bson_t *reply, size_t n)
{
    bson_iter_t it, arr, first;
    if (berr->domain == MONGOC_ERROR_COMMAND && berr->code == MONGOC_ERROR_COMMAND_INVALID_ARG)
        return n;
    if (bson_iter_init_find(&it, reply, "writeConcernErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
        bson_iter_recurse(&it, &arr) && bson_iter_next(&arr))
        return MDB_INSERT_UNKNOWN;
    if (!bson_iter_init_find(&it, reply, "writeErrors") || !BSON_ITER_HOLDS_ARRAY(&it) ||
        !bson_iter_recurse(&it, &arr) || !bson_iter_next(&arr) || !BSON_ITER_HOLDS_DOCUMENT(&arr) ||
        !bson_iter_recurse(&arr, &first) || !bson_iter_find(&first, "index") ||
        !(BSON_ITER_HOLDS_INT32(&first) || BSON_ITER_HOLDS_INT64(&first)))
        return MDB_INSERT_UNKNOWN;
    int64_t k = bson_iter_as_int64(&first);
    if (mdb_reply_count(reply, "insertedCount") != k || k < 0 || (size_t)k >= n)
        return MDB_INSERT_UNKNOWN;
    return (size_t)k;
}

static bool mdb_insert_many_do(mdb_t *m, mongoc_client_t *c, const char *coll,
                               const bson_t *const *docs, size_t n, size_t *refused,
                               cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    if (!mdb_check_up(m, err)) {
        *refused = MDB_INSERT_UNKNOWN; /* the batch as a whole */
        return false;
    }
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    bool ok = mongoc_collection_insert_many(col, (const bson_t **)docs, n, NULL, &reply, &berr);
    if (!ok) {
        mdb_fail(m, &berr, &reply, "database write", err);
        *refused = mdb_insert_refused(&berr, &reply, n);
    }
    bson_destroy(&reply);
    mongoc_collection_destroy(col);
    return ok;
}

bool mdb_insert_many(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *const *docs,
                     size_t n, size_t *refused, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_insert_many_do(m, c, coll, docs, n, refused, err);
    mdb_metric(coll, "insert_many", t0, ok, err);
    return ok;
}

static bool mdb_update_one_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *sel,
                              const bson_t *upd, bool *matched, cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    bool ok = mongoc_collection_update_one(col, sel, upd, NULL, &reply, &berr);
    if (!ok)
        mdb_fail(m, &berr, &reply, "database update", err);
    else if (matched)
        *matched = mdb_reply_count(&reply, "matchedCount") > 0;
    bson_destroy(&reply);
    mongoc_collection_destroy(col);
    return ok;
}

bool mdb_update_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *sel,
                    const bson_t *upd, bool *matched, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_update_one_do(m, c, coll, sel, upd, matched, err);
    mdb_metric(coll, "update", t0, ok, err);
    return ok;
}

static bool mdb_update_one_returning_do(mdb_t *m, mongoc_client_t *c, const char *coll,
                                        const bson_t *sel, const bson_t *upd, bson_t *after,
                                        bool *matched, cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    bson_iter_t it;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    mongoc_find_and_modify_opts_t *o = mongoc_find_and_modify_opts_new();
    mongoc_find_and_modify_opts_set_update(o, upd);
    mongoc_find_and_modify_opts_set_flags(o, MONGOC_FIND_AND_MODIFY_RETURN_NEW);
    bool ok = mongoc_collection_find_and_modify_with_opts(col, sel, o, &reply, &berr);
    if (!ok) {
        mdb_fail(m, &berr, &reply, "database update", err);
    } else if (bson_iter_init_find(&it, &reply, "value") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        const uint8_t *data;
        uint32_t len;
        bson_t doc;
        bson_iter_document(&it, &len, &data);
        if (!bson_init_static(&doc, data, len)) {
            ok = cx_error_set(err, CX_ERR_INTERNAL, "database update: malformed reply");
        } else {
            bson_copy_to(&doc, after);
            *matched = true;
        }
    } else {
        *matched = false; /* value: null */
    }
    mongoc_find_and_modify_opts_destroy(o);
    bson_destroy(&reply);
    mongoc_collection_destroy(col);
    return ok;
}

bool mdb_update_one_returning(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *sel,
                              const bson_t *upd, bson_t *after, bool *matched, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_update_one_returning_do(m, c, coll, sel, upd, after, matched, err);
    mdb_metric(coll, "update_returning", t0, ok, err);
    return ok;
}

static bool mdb_delete_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                          bool many, bool *deleted, cx_error_t *err)
{
    bson_error_t berr;
    bson_t reply;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    bool ok = many ? mongoc_collection_delete_many(col, filter, NULL, &reply, &berr)
                   : mongoc_collection_delete_one(col, filter, NULL, &reply, &berr);
    if (!ok)
        mdb_fail(m, &berr, &reply, "database delete", err);
    bson_iter_t it;
    if (ok && deleted)
        *deleted = bson_iter_init_find(&it, &reply, "deletedCount") && bson_iter_as_int64(&it) > 0;
    bson_destroy(&reply);
    mongoc_collection_destroy(col);
    return ok;
}

static bool mdb_delete(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                       bool many, bool *deleted, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_delete_do(m, c, coll, filter, many, deleted, err);
    mdb_metric(coll, "delete", t0, ok, err);
    return ok;
}

bool mdb_delete_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                    cx_error_t *err)
{
    return mdb_delete(m, c, coll, filter, false, NULL, err);
}

bool mdb_delete_one_counted(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                            bool *deleted, cx_error_t *err)
{
    return mdb_delete(m, c, coll, filter, false, deleted, err);
}

bool mdb_delete_many(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                     cx_error_t *err)
{
    return mdb_delete(m, c, coll, filter, true, NULL, err);
}

/* The cursor loop of mdb_find_page and mdb_find_each: documents to row, at most limit of them
 * (0: all); *more (may be NULL) tells whether another one followed the limit. */
static bool mdb_find_rows_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                             const bson_t *opts, unsigned limit, mdb_row_fn row, void *ctx,
                             bool *more, cx_error_t *err)
{
    bson_error_t berr;
    const bson_t *doc;
    unsigned n = 0;
    bool ok = true, next = false;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, filter, opts, NULL);
    while (ok && mongoc_cursor_next(cur, &doc)) {
        if (limit && n == limit) {
            next = true;
            break;
        }
        ok = row(ctx, doc, err);
        n++;
    }
    if (ok && mongoc_cursor_error(cur, &berr))
        ok = mdb_fail(m, &berr, NULL, "database read", err);
    if (ok && more)
        *more = next;
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    return ok;
}

static bool mdb_find_rows(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                          const bson_t *opts, unsigned limit, mdb_row_fn row, void *ctx, bool *more,
                          cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_find_rows_do(m, c, coll, filter, opts, limit, row, ctx, more, err);
    mdb_metric(coll, "find_rows", t0, ok, err);
    return ok;
}

/* The first limit documents of filter sorted by sortkey (then idkey, when not NULL) in one
 * direction (dir: 1 ascending, -1 descending); limit + 1 are asked for so that *more is known. */
static bool mdb_find_sorted(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                            const char *sortkey, const char *idkey, int dir, unsigned limit,
                            mdb_row_fn row, void *ctx, bool *more, cx_error_t *err)
{
    bson_t opts = BSON_INITIALIZER, sort;
    if (limit < 1)
        return cx_error_set(err, CX_ERR_INTERNAL, "database read: page limit 0");
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "sort", &sort);
    BSON_APPEND_INT32(&sort, sortkey, dir);
    if (idkey)
        BSON_APPEND_INT32(&sort, idkey, dir);
    bson_append_document_end(&opts, &sort);
    BSON_APPEND_INT64(&opts, "limit", (int64_t)limit + 1);
    bool ok = mdb_find_rows(m, c, coll, filter, &opts, limit, row, ctx, more, err);
    bson_destroy(&opts);
    return ok;
}

bool mdb_find_page(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                   const char *sortkey, const char *idkey, unsigned limit, mdb_row_fn row,
                   void *ctx, bool *more, cx_error_t *err)
{
    return mdb_find_sorted(m, c, coll, filter, sortkey, idkey, -1, limit, row, ctx, more, err);
}

bool mdb_find_first(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                    const char *sortkey, unsigned limit, mdb_row_fn row, void *ctx, bool *more,
                    cx_error_t *err)
{
    return mdb_find_sorted(m, c, coll, filter, sortkey, NULL, 1, limit, row, ctx, more, err);
}

static bool mdb_count_do(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                         uint64_t *count, cx_error_t *err)
{
    bson_error_t berr;
    if (!mdb_check_up(m, err))
        return false;
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    int64_t n = mongoc_collection_count_documents(col, filter, NULL, NULL, NULL, &berr);
    bool ok = n >= 0;
    if (!ok)
        mdb_fail(m, &berr, NULL, "database count", err);
    else
        *count = (uint64_t)n;
    mongoc_collection_destroy(col);
    return ok;
}

bool mdb_count(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
               uint64_t *count, cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = mdb_count_do(m, c, coll, filter, count, err);
    mdb_metric(coll, "count", t0, ok, err);
    return ok;
}

bool mdb_find_each(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                   mdb_row_fn row, void *ctx, cx_error_t *err)
{
    return mdb_find_rows(m, c, coll, filter, NULL, 0, row, ctx, NULL, err);
}

/* ---- error mapping --------------------------------------------------------------------- */

/* Server error codes that mean "the database is not there right now" rather than "your
 * request is wrong": host unreachable/not found, network timeout, shutdown, not primary,
 * step-down, write-concern timeout, maxTimeMS. */
static bool mdb_server_code_unavailable(uint32_t code)
{
    static const uint32_t codes[] = {6,     7,     50,    64,    89,    91,  189,
                                     10107, 11600, 11602, 13435, 13436, 262, 9001};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (codes[i] == code)
            return true;
    return false;
}

static bool mdb_code_duplicate(uint32_t code)
{
    return code == 11000 || code == 11001 || code == 12582;
}

bool mdb_error_is_outage(const bson_error_t *berr)
{
    return berr &&
           (berr->domain == MONGOC_ERROR_STREAM || berr->domain == MONGOC_ERROR_SERVER_SELECTION);
}

cx_code_t mdb_error_code(const bson_error_t *berr, const bson_t *reply)
{
    if (!berr)
        return CX_ERR_INTERNAL;
    switch (berr->domain) {
    case MONGOC_ERROR_STREAM:
    case MONGOC_ERROR_SERVER_SELECTION:
        return CX_ERR_UNAVAILABLE;
    case MONGOC_ERROR_CLIENT:
        /* Authentication, TLS handshake and "too many clients" are all outages seen from the
         * caller: the request itself was fine. */
        return CX_ERR_UNAVAILABLE;
    default:
        break;
    }
    if (mdb_code_duplicate(berr->code))
        return CX_ERR_CONFLICT;
    if (berr->domain == MONGOC_ERROR_SERVER || berr->domain == MONGOC_ERROR_WRITE_CONCERN ||
        berr->domain == MONGOC_ERROR_QUERY || berr->domain == MONGOC_ERROR_COLLECTION ||
        berr->domain == MONGOC_ERROR_COMMAND) {
        if (mdb_server_code_unavailable(berr->code))
            return CX_ERR_UNAVAILABLE;
        if (berr->domain == MONGOC_ERROR_WRITE_CONCERN)
            return CX_ERR_UNAVAILABLE;
    }
    if (reply) {
        /* Bulk/insert replies carry the first write error in writeErrors[0].code. */
        bson_iter_t it, child;
        if (bson_iter_init_find(&it, reply, "writeErrors") && BSON_ITER_HOLDS_ARRAY(&it) &&
            bson_iter_recurse(&it, &child) && bson_iter_next(&child) &&
            BSON_ITER_HOLDS_DOCUMENT(&child)) {
            bson_iter_t doc;
            if (bson_iter_recurse(&child, &doc) && bson_iter_find(&doc, "code") &&
                mdb_code_duplicate((uint32_t)bson_iter_as_int64(&doc)))
                return CX_ERR_CONFLICT;
        }
        if (mongoc_error_has_label(reply, "RetryableWriteError") ||
            mongoc_error_has_label(reply, "TransientTransactionError"))
            return CX_ERR_UNAVAILABLE;
    }
    return CX_ERR_INTERNAL;
}

bool mdb_error_map(const bson_error_t *berr, const bson_t *reply, const char *what, cx_error_t *err)
{
    cx_code_t code = mdb_error_code(berr, reply);
    if (code == CX_ERR_CONFLICT)
        return cx_error_set(err, code, "%s: duplicate key", what);
    /* Driver messages name hosts, commands and fields; never document values we wrote (the
     * driver does not echo them and duplicate-key messages are replaced above). */
    return cx_error_set(err, code, "%s: %s", what, berr ? berr->message : "unknown error");
}

/* ---- indexes (docs/DATA_MODEL.md, exactly)
 * ------------------------------------------------------- */

typedef struct mdb_index_key {
    const char *field;
    int dir;
} mdb_index_key_t;

typedef enum mdb_partial {
    MDB_PARTIAL_NONE = 0,
    MDB_PARTIAL_STATUS_NOT_DELETED, /* { status: { $ne: "deleted" } } */
} mdb_partial_t;

typedef struct mdb_index_spec {
    const char *coll;
    mdb_index_key_t keys[4];
    bool unique;
    mdb_partial_t partial;
} mdb_index_spec_t;

static const mdb_index_spec_t mdb_indexes[] = {
    {MDB_COLL_SECRET_REFS, {{"secret_id", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_SECRET_REFS,
     {{"owner_type", 1}, {"owner_id", 1}, {"kind", 1}, {"status", 1}},
     false,
     MDB_PARTIAL_NONE},
    {MDB_COLL_SECRET_REFS,
     {{"provider", 1}, {"connector_id", 1}, {"status", 1}},
     false,
     MDB_PARTIAL_NONE},
    {MDB_COLL_SECRET_REFS, {{"updated_at", -1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_PAYLOADS, {{"payload_id", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_PAYLOADS, {{"secret_id", 1}, {"version", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_PAYLOADS, {{"secret_id", 1}, {"created_at", -1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_OAUTH_CONNECTORS, {{"connector_id", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_OAUTH_CONNECTORS,
     {{"provider_key", 1}, {"type", 1}},
     true,
     MDB_PARTIAL_STATUS_NOT_DELETED},
    {MDB_COLL_OAUTH_CONNECTORS, {{"status", 1}, {"enabled_for", 1}}, false, MDB_PARTIAL_NONE},
    /* One live connector per (provider_key, type) on every backend (FerretDB has no partial
     * indexes): live_key is "<provider_key>/<type>", or "deleted/<connector_id>" once deleted. */
    {MDB_COLL_OAUTH_CONNECTORS, {{"live_key", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_CONNECTIONS, {{"connection_id", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_CONNECTIONS,
     {{"subject_user_id", 1}, {"provider_key", 1}, {"state", 1}},
     false,
     MDB_PARTIAL_NONE},
    {MDB_COLL_CONNECTIONS, {{"connector_id", 1}, {"state", 1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_CONNECTIONS,
     {{"provider_key", 1}, {"provider_resource_id", 1}, {"state", 1}},
     false,
     MDB_PARTIAL_NONE},
    /* One live connection per (user, connector, provider account) on every backend: live_key is
     * "<user>/<connector>/<account>" while active, "pending/<id>" or "gone/<id>" otherwise. */
    {MDB_COLL_CONNECTIONS, {{"live_key", 1}}, true, MDB_PARTIAL_NONE},
    /* Flows in progress: swept by expiry. */
    {MDB_COLL_OAUTH_FLOWS, {{"expires_at", 1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_AUDIT_EVENTS, {{"created_at", -1}, {"event_type", 1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_AUDIT_EVENTS,
     {{"resource_type", 1}, {"resource_id", 1}, {"created_at", -1}},
     false,
     MDB_PARTIAL_NONE},
    {MDB_COLL_AUDIT_EVENTS, {{"subject_user_id", 1}, {"created_at", -1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_AUDIT_EVENTS, {{"correlation_id", 1}}, false, MDB_PARTIAL_NONE},
    {MDB_COLL_MIGRATION_PREVIEWS, {{"preview_id", 1}}, true, MDB_PARTIAL_NONE},
    {MDB_COLL_MIGRATION_PREVIEWS,
     {{"source_type", 1}, {"source_id", 1}, {"status", 1}},
     false,
     MDB_PARTIAL_NONE},
    {MDB_COLL_MIGRATION_PREVIEWS, {{"created_at", -1}}, false, MDB_PARTIAL_NONE},
    /* The newest epoch of a lease key (mdb_lease.c); the epoch's uniqueness is the _id's. */
    {MDB_COLL_LEASES, {{"key", 1}, {"epoch", -1}}, true, MDB_PARTIAL_NONE},
};

/* MongoDB's default index name: field_dir joined by '_' (e.g. "secret_id_1_version_1"). */
static void mdb_index_name(const mdb_index_spec_t *s, char *buf, size_t bufsz)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < 4 && s->keys[i].field; i++) {
        int n = snprintf(buf + off, bufsz - off, "%s%s_%d", i ? "_" : "", s->keys[i].field,
                         s->keys[i].dir);
        if (n < 0 || (size_t)n >= bufsz - off)
            break;
        off += (size_t)n;
    }
}

static void mdb_index_doc(const mdb_index_spec_t *s, const char *name, bool with_partial,
                          bson_t *out)
{
    bson_t keys, partial, ne;
    bson_init(out);
    BSON_APPEND_DOCUMENT_BEGIN(out, "key", &keys);
    for (size_t i = 0; i < 4 && s->keys[i].field; i++)
        BSON_APPEND_INT32(&keys, s->keys[i].field, s->keys[i].dir);
    bson_append_document_end(out, &keys);
    BSON_APPEND_UTF8(out, "name", name);
    if (s->unique)
        BSON_APPEND_BOOL(out, "unique", true);
    if (with_partial && s->partial == MDB_PARTIAL_STATUS_NOT_DELETED) {
        BSON_APPEND_DOCUMENT_BEGIN(out, "partialFilterExpression", &partial);
        BSON_APPEND_DOCUMENT_BEGIN(&partial, "status", &ne);
        BSON_APPEND_UTF8(&ne, "$ne", "deleted");
        bson_append_document_end(&partial, &ne);
        bson_append_document_end(out, &partial);
    }
}

static bool mdb_create_index(mongoc_collection_t *coll, const bson_t *index, bson_error_t *berr,
                             bson_t *reply)
{
    bson_t cmd = BSON_INITIALIZER, arr;
    BSON_APPEND_UTF8(&cmd, "createIndexes", mongoc_collection_get_name(coll));
    BSON_APPEND_ARRAY_BEGIN(&cmd, "indexes", &arr);
    BSON_APPEND_DOCUMENT(&arr, "0", index);
    bson_append_array_end(&cmd, &arr);
    bool ok = mongoc_collection_write_command_with_opts(coll, &cmd, NULL, reply, berr);
    bson_destroy(&cmd);
    return ok;
}

/* Did the server keep the partial filter? FerretDB may accept the option and drop it, which
 * would silently turn "unique among live connectors" into "unique forever". */
static bool mdb_index_has_partial(mongoc_collection_t *coll, const char *name, bool *has,
                                  bson_error_t *berr)
{
    const bson_t *doc;
    bool found = false;
    *has = false;
    mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(coll, NULL);
    while (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, doc, "name") && BSON_ITER_HOLDS_UTF8(&it) &&
            strcmp(bson_iter_utf8(&it, NULL), name) == 0) {
            found = true;
            *has = bson_iter_init_find(&it, doc, "partialFilterExpression");
        }
    }
    bool ok = !mongoc_cursor_error(cur, berr);
    mongoc_cursor_destroy(cur);
    return ok && found;
}

static bool mdb_partial_refused(const bson_error_t *berr)
{
    /* By code, never by message text: FerretDB 1.24 answers NotImplemented (238); a server
     * without the option at all, CommandNotSupported (115) or InvalidIndexSpecificationOption
     * (197). MongoDB's IndexOptionsConflict (85) and IndexKeySpecsConflict (86), whose messages
     * also name partialFilterExpression, are real errors (an index of that name exists with
     * other options) and must not read as "degraded". */
    return berr->code == 238 || berr->code == 115 || berr->code == 197;
}

static void mdb_report_degraded(mdb_report_fn report, void *ctx, const char *coll, const char *name,
                                const char *reason, const char *server_said, unsigned *ndegraded)
{
    char line[768];
    snprintf(line, sizeof(line), "degraded: %s.%s: %s (server: %.200s)", coll, name, reason,
             server_said);
    if (report)
        report(ctx, line);
    cx_log_warn(NULL, "mdb.index_degraded", CX_LOG_STR("collection", coll),
                CX_LOG_STR("index", name), CX_LOG_STR("reason", "partial_filter_unsupported"));
    if (ndegraded)
        (*ndegraded)++;
}

/* Why a partial unique index is skipped rather than created without its filter: unique over
 * ALL documents would refuse re-creating a connector whose predecessor was deleted (the
 * tombstone keeps provider_key/type), i.e. it would break correct requests. */
static const char mdb_partial_reason[] =
    "server does not support partialFilterExpression; unique index skipped (without the "
    "filter it would also cover deleted tombstones and refuse valid re-creation); uniqueness "
    "of live (provider_key, type) is not enforced by the database";

static bool mdb_ensure_index(mdb_t *m, mongoc_client_t *c, const mdb_index_spec_t *s,
                             mdb_report_fn report, void *ctx, unsigned *ndegraded, cx_error_t *err)
{
    char name[128], line[256];
    bson_error_t berr;
    bson_t index, reply;
    bool ok = false;
    mongoc_collection_t *coll = mdb_collection(m, c, s->coll);

    mdb_index_name(s, name, sizeof(name));
    mdb_index_doc(s, name, true, &index);
    if (!mdb_create_index(coll, &index, &berr, &reply)) {
        cx_code_t code = mdb_error_code(&berr, &reply);
        if (s->partial != MDB_PARTIAL_NONE && code == CX_ERR_INTERNAL &&
            mdb_partial_refused(&berr)) {
            mdb_report_degraded(report, ctx, s->coll, name, mdb_partial_reason, berr.message,
                                ndegraded);
            ok = true;
        } else {
            char what[200];
            snprintf(what, sizeof(what), "create index %s.%s", s->coll, name);
            mdb_fail(m, &berr, &reply, what, err);
        }
        goto out;
    }
    if (s->partial != MDB_PARTIAL_NONE) {
        bool has = false;
        if (!mdb_index_has_partial(coll, name, &has, &berr)) {
            cx_error_set(err, CX_ERR_INTERNAL, "index %s.%s missing after creation", s->coll, name);
            goto out;
        }
        if (!has) {
            /* Accepted but dropped: remove the over-strict index it left behind. */
            bson_error_t derr;
            if (!mongoc_collection_drop_index_with_opts(coll, name, NULL, &derr)) {
                mdb_fail(m, &derr, NULL, "drop over-strict index", err);
                goto out;
            }
            mdb_report_degraded(report, ctx, s->coll, name, mdb_partial_reason,
                                "accepted the option but did not keep it", ndegraded);
            ok = true;
            goto out;
        }
    }
    snprintf(line, sizeof(line), "index %s.%s: ok", s->coll, name);
    if (report)
        report(ctx, line);
    ok = true;
out:
    bson_destroy(&reply);
    bson_destroy(&index);
    mongoc_collection_destroy(coll);
    return ok;
}

bool mdb_init_indexes(mdb_t *m, mdb_report_fn report, void *ctx, unsigned *ndegraded,
                      cx_error_t *err)
{
    bool ok = true;
    mongoc_client_t *c = mdb_client_pop(m, err);
    if (!c)
        return false;
    if (ndegraded)
        *ndegraded = 0;
    for (size_t i = 0; ok && i < sizeof(mdb_indexes) / sizeof(mdb_indexes[0]); i++)
        ok = mdb_ensure_index(m, c, &mdb_indexes[i], report, ctx, ndegraded, err);
    mdb_client_push(m, c);
    return ok;
}
