/* mdb: see mdb.h. */
#include "common/mdb/mdb.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log/cx_log.h"

struct mdb {
    mongoc_client_pool_t *pool;
    mongoc_write_concern_t *wc;
    char db[64];
    unsigned timeout_ms;
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
    /* Every wait the driver can do is bounded by the same budget: an outage must surface as
     * unavailable within the caller's deadline instead of hanging a worker thread. */
    int32_t t = (int32_t)opts->timeout_ms;
    if (!mongoc_uri_set_option_as_int32(uri, MONGOC_URI_CONNECTTIMEOUTMS, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_SOCKETTIMEOUTMS, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_WAITQUEUETIMEOUTMS, t) ||
        !mongoc_uri_set_option_as_int32(uri, MONGOC_URI_MAXPOOLSIZE, (int32_t)opts->pool_max)) {
        mongoc_uri_destroy(uri);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb: cannot set URI options");
    }
    /* Fail fast on a dead server instead of blocking the whole selection budget once per
     * retry: one selection attempt per operation. */
    mongoc_uri_set_option_as_bool(uri, MONGOC_URI_SERVERSELECTIONTRYONCE, true);
    if (opts->app_name)
        mongoc_uri_set_appname(uri, opts->app_name);

    m = bson_malloc0(sizeof(*m));
    snprintf(m->db, sizeof(m->db), "%s", opts->db);
    m->timeout_ms = opts->timeout_ms;
    m->pool = mongoc_client_pool_new_with_error(uri, &berr);
    mongoc_uri_destroy(uri);
    if (!m->pool) {
        bson_free(m);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "mdb: cannot create the client pool");
    }
    mongoc_client_pool_set_error_api(m->pool, MONGOC_ERROR_API_VERSION_2);
    m->wc = mongoc_write_concern_new();
    if (opts->write_majority)
        mongoc_write_concern_set_wmajority(m->wc, (int32_t)opts->timeout_ms);
    else
        mongoc_write_concern_set_w(m->wc, 1);
    *out = m;
    return true;
}

void mdb_close(mdb_t *m)
{
    if (!m)
        return;
    mongoc_client_pool_destroy(m->pool);
    mongoc_write_concern_destroy(m->wc);
    bson_free(m);
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
        mdb_error_map(&berr, NULL, "database ping", err);
out:
    bson_destroy(&cmd);
    mdb_client_push(m, c);
    return ok;
}

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

/* ---- indexes (seed 003, exactly) ------------------------------------------------------- */

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
    /* FerretDB answers NotImplemented (238) or a BadValue/InvalidOptions naming the option. */
    return berr->code == 238 || berr->code == 115 ||
           strstr(berr->message, "partialFilterExpression") != NULL ||
           strstr(berr->message, "partial") != NULL;
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
            mdb_error_map(&berr, &reply, what, err);
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
                mdb_error_map(&derr, NULL, "drop over-strict index", err);
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
