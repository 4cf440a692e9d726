/*
 * Unit tests of common/mdb: error mapping (pure), and against a real FerretDB started by the
 * ctest fixture (mdb_ferretdb, $CREDEX_TEST_FERRETDB_DIR/uri): the operations, index bootstrap
 * (idempotent, explicit degradation), duplicate keys as conflict, an outage as unavailable
 * within the timeout, and `credexctl db init-indexes` through credexctl_cmd_db. The down state
 * is tested against a FerretDB of the test's own (same binary, $CREDEX_TEST_FERRETDB_DIR/bin)
 * that it stops, freezes (SIGSTOP) and starts again on the same port.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "common/config/cx_config.h"
#include "common/mdb/mdb.h"
#include "tests/unit/kit/testkit.h"
#include "tools/credexctl/cmd_db.h"

static char uri[256];
static char dbname[64];

static mdb_t *open_db(const char *u, unsigned timeout_ms)
{
    return tk_mdb_open(u, dbname, timeout_ms);
}

/* ---- pure ------------------------------------------------------------------------------ */

static void test_error_mapping(void **state)
{
    (void)state;
    bson_error_t e;
    memset(&e, 0, sizeof(e));
    e.domain = MONGOC_ERROR_STREAM;
    e.code = MONGOC_ERROR_STREAM_SOCKET;
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_UNAVAILABLE);
    e.domain = MONGOC_ERROR_SERVER_SELECTION;
    e.code = MONGOC_ERROR_SERVER_SELECTION_FAILURE;
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_UNAVAILABLE);
    e.domain = MONGOC_ERROR_SERVER;
    e.code = 11000;
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_CONFLICT);
    e.code = 89; /* NetworkTimeout */
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_UNAVAILABLE);
    e.code = 10107; /* NotWritablePrimary */
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_UNAVAILABLE);
    e.code = 2; /* BadValue */
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_INTERNAL);
    e.domain = MONGOC_ERROR_WRITE_CONCERN;
    e.code = 64;
    assert_int_equal(mdb_error_code(&e, NULL), CX_ERR_UNAVAILABLE);
    assert_int_equal(mdb_error_code(NULL, NULL), CX_ERR_INTERNAL);

    cx_error_t err;
    e.domain = MONGOC_ERROR_SERVER;
    e.code = 11000;
    snprintf(e.message, sizeof(e.message), "E11000 duplicate key { secret_id: \"x\" }");
    assert_false(mdb_error_map(&e, NULL, "secret write", &err));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    /* The driver's message may quote key values: it is not copied for duplicates. */
    assert_null(strstr(err.message, "secret_id"));
}

static void test_bad_uri(void **state)
{
    (void)state;
    mdb_t *m = NULL;
    cx_error_t err;
    mdb_options_t o = {
        .uri = "mongodb://user:hunter2@[::bad", .db = "x", .timeout_ms = 100, .pool_max = 1};
    assert_false(mdb_open(&m, &o, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "hunter2"));
    assert_null(m);
    mdb_close(NULL);
}

/* ---- against FerretDB ------------------------------------------------------------------ */

typedef struct report {
    unsigned ok, degraded;
    char lines[64][512];
    unsigned n;
} report_t;

static void collect(void *ctx, const char *line)
{
    report_t *r = ctx;
    if (strncmp(line, "degraded: ", 10) == 0)
        r->degraded++;
    else if (strstr(line, ": ok"))
        r->ok++;
    if (r->n < 64)
        snprintf(r->lines[r->n++], sizeof(r->lines[0]), "%s", line);
}

static bool index_exists(mdb_t *m, const char *coll, const char *name, bool *unique)
{
    cx_error_t err;
    const bson_t *doc;
    bool found = false;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    mongoc_collection_t *col = mdb_collection(m, c, coll);
    mongoc_cursor_t *cur = mongoc_collection_find_indexes_with_opts(col, NULL);
    while (mongoc_cursor_next(cur, &doc)) {
        bson_iter_t it;
        if (bson_iter_init_find(&it, doc, "name") && strcmp(bson_iter_utf8(&it, NULL), name) == 0) {
            found = true;
            *unique = bson_iter_init_find(&it, doc, "unique") && bson_iter_as_bool(&it);
        }
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(col);
    mdb_client_push(m, c);
    return found;
}

static void test_init_indexes_idempotent(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    cx_error_t err;
    report_t r1 = {0}, r2 = {0};
    unsigned nd1 = 99, nd2 = 99;
    assert_true(mdb_ping(m, &err));
    if (!mdb_init_indexes(m, collect, &r1, &nd1, &err))
        fail_msg("init_indexes: %s", err.message);
    for (unsigned i = 0; i < r1.n; i++)
        printf("  %s\n", r1.lines[i]);
    /* 25 indexes in docs/DATA_MODEL.md; every one is either created or explicitly degraded. */
    assert_int_equal(r1.ok + r1.degraded, 25);
    assert_int_equal(nd1, r1.degraded);
    assert_true(mdb_init_indexes(m, collect, &r2, &nd2, &err));
    assert_int_equal(r2.ok, r1.ok);
    assert_int_equal(r2.degraded, r1.degraded);
    /* The only partial index of the seed; when degraded, it is named. */
    for (unsigned i = 0; i < r1.n; i++)
        if (strncmp(r1.lines[i], "degraded: ", 10) == 0)
            assert_non_null(strstr(r1.lines[i], "oauth_connectors.provider_key_1_type_1"));
    bool unique = false;
    assert_true(index_exists(m, MDB_COLL_SECRET_REFS, "secret_id_1", &unique));
    assert_true(unique);
    assert_true(index_exists(m, MDB_COLL_PAYLOADS, "secret_id_1_version_1", &unique));
    assert_true(unique);
    assert_true(index_exists(m, MDB_COLL_AUDIT_EVENTS, "created_at_-1_event_type_1", &unique));
    assert_false(unique);
    /* What keeps live connectors unique where the partial index is degraded: never degraded. */
    assert_true(index_exists(m, MDB_COLL_OAUTH_CONNECTORS, "live_key_1", &unique));
    assert_true(unique);
    if (r1.degraded)
        assert_false(index_exists(m, MDB_COLL_OAUTH_CONNECTORS, "provider_key_1_type_1", &unique));
    mdb_close(m);
}

static void test_duplicate_is_conflict(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    cx_error_t err;
    bson_error_t berr;
    bson_t reply;
    assert_true(mdb_init_indexes(m, NULL, NULL, NULL, &err));
    mongoc_client_t *c = mdb_client_pop(m, &err);
    mongoc_collection_t *col = mdb_collection(m, c, MDB_COLL_SECRET_REFS);
    bson_t *doc = BCON_NEW("secret_id", BCON_UTF8("sec_DUPLICATETEST0000000000000"));
    assert_true(mongoc_collection_insert_one(col, doc, NULL, NULL, &berr));
    assert_false(mongoc_collection_insert_one(col, doc, NULL, &reply, &berr));
    assert_int_equal(mdb_error_code(&berr, &reply), CX_ERR_CONFLICT);
    bson_destroy(&reply);
    bson_destroy(doc);
    mongoc_collection_destroy(col);
    mdb_client_push(m, c);
    mdb_close(m);
}

static void test_outage_is_unavailable_in_time(void **state)
{
    (void)state;
    /* Port 9 (discard) on loopback: nothing listens, connections are refused. */
    mdb_t *m = open_db("mongodb://127.0.0.1:9/", 300);
    cx_error_t err;
    int64_t t0 = tk_mono_ms();
    assert_false(mdb_ping(m, &err));
    int64_t dt = tk_mono_ms() - t0;
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(dt < 2000);
    report_t r = {0};
    assert_false(mdb_init_indexes(m, collect, &r, NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    mdb_close(m);
}

/* ---- operations ------------------------------------------------------------------------ */

static bson_t *doc_of(const char *id, int64_t at)
{
    return BCON_NEW("_id", BCON_UTF8(id), "group", BCON_UTF8("ops"), "at", BCON_INT64(at), "n",
                    BCON_INT32(0));
}

typedef struct rows {
    char ids[8][32];
    size_t n;
    bool stop_at_2;
} rows_t;

static bool collect_row(void *ctx, const bson_t *doc, cx_error_t *err)
{
    rows_t *r = ctx;
    bson_iter_t it;
    if (r->stop_at_2 && r->n == 2)
        return cx_error_set(err, CX_ERR_INTEGRITY, "row refused (test)");
    assert_true(bson_iter_init_find(&it, doc, "_id"));
    snprintf(r->ids[r->n++], sizeof(r->ids[0]), "%s", bson_iter_utf8(&it, NULL));
    return true;
}

static void test_operations(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    cx_error_t err;
    bson_t out;
    bool found = true, matched = false, more = false;
    const char *coll = "mdb_ops";
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    bson_t *any = BCON_NEW("group", BCON_UTF8("ops"));
    assert_true(mdb_delete_many(m, c, coll, any, &err));
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "op-%d", i);
        bson_t *d = doc_of(id, 100 + i / 2); /* two pairs share a sort key: the id decides */
        assert_true(mdb_insert_one(m, c, coll, d, &err));
        if (i == 0) {
            assert_false(mdb_insert_one(m, c, coll, d, &err));
            assert_int_equal(err.code, CX_ERR_CONFLICT);
        }
        bson_destroy(d);
    }
    bson_t *f0 = BCON_NEW("_id", BCON_UTF8("op-0"));
    bson_t *fx = BCON_NEW("_id", BCON_UTF8("op-none"));
    assert_true(mdb_find_one(m, c, coll, fx, &out, &found, &err));
    assert_false(found);
    assert_true(mdb_find_one(m, c, coll, f0, &out, &found, &err));
    assert_true(found);
    bson_destroy(&out);

    bson_t *inc = BCON_NEW("$set", "{", "n", BCON_INT32(7), "}");
    assert_true(mdb_update_one(m, c, coll, fx, inc, &matched, &err));
    assert_false(matched);
    assert_true(mdb_update_one(m, c, coll, f0, inc, &matched, &err));
    assert_true(matched);
    bson_t *inc2 = BCON_NEW("$set", "{", "n", BCON_INT32(8), "}");
    assert_true(mdb_update_one_returning(m, c, coll, fx, inc2, &out, &matched, &err));
    assert_false(matched);
    assert_true(mdb_update_one_returning(m, c, coll, f0, inc2, &out, &matched, &err));
    assert_true(matched);
    bson_iter_t it;
    assert_true(bson_iter_init_find(&it, &out, "n"));
    assert_int_equal(bson_iter_as_int64(&it), 8); /* the document after the update */
    bson_destroy(&out);

    /* Pages of 2, newest first, ties broken by the id (descending). */
    rows_t r = {0};
    assert_true(mdb_find_page(m, c, coll, any, "at", "_id", 2, collect_row, &r, &more, &err));
    assert_int_equal(r.n, 2);
    assert_true(more);
    assert_string_equal(r.ids[0], "op-4");
    assert_string_equal(r.ids[1], "op-3");
    memset(&r, 0, sizeof(r));
    assert_true(mdb_find_page(m, c, coll, any, "at", "_id", 5, collect_row, &r, &more, &err));
    assert_int_equal(r.n, 5);
    assert_false(more);
    assert_string_equal(r.ids[4], "op-0");
    /* A row that fails fails the page with its own error. */
    memset(&r, 0, sizeof(r));
    r.stop_at_2 = true;
    assert_false(mdb_find_page(m, c, coll, any, "at", "_id", 5, collect_row, &r, &more, &err));
    assert_int_equal(err.code, CX_ERR_INTEGRITY);

    /* Ascending by _id, keyset-paged the way store's RewrapDataKeys walks payloads, under a
     * filter with $or/$ne (FerretDB answers both), and the count of the same filter. */
    memset(&r, 0, sizeof(r));
    bson_t *odd =
        BCON_NEW("group", BCON_UTF8("ops"), "$or", "[", "{", "at", "{", "$ne", BCON_INT64(100), "}",
                 "}", "{", "n", "{", "$ne", BCON_INT32(8), "}", "}", "]");
    assert_true(mdb_find_first(m, c, coll, odd, "_id", 2, collect_row, &r, &more, &err));
    assert_int_equal(r.n, 2);
    assert_true(more);
    assert_string_equal(r.ids[0], "op-1"); /* op-0: at 100 and n 8 */
    assert_string_equal(r.ids[1], "op-2");
    uint64_t count = 0;
    assert_true(mdb_count(m, c, coll, odd, &count, &err));
    assert_int_equal(count, 4);
    bson_t *after = BCON_NEW("group", BCON_UTF8("ops"), "_id", "{", "$gt", BCON_UTF8("op-2"), "}");
    memset(&r, 0, sizeof(r));
    assert_true(mdb_find_first(m, c, coll, after, "_id", 5, collect_row, &r, &more, &err));
    assert_int_equal(r.n, 2);
    assert_false(more);
    assert_string_equal(r.ids[0], "op-3");
    assert_string_equal(r.ids[1], "op-4");
    bson_destroy(odd);
    bson_destroy(after);

    /* A counted delete tells whether it removed the document: the single-use claim. */
    bson_t *f1 = BCON_NEW("_id", BCON_UTF8("op-1"));
    bool deleted = false;
    assert_true(mdb_delete_one_counted(m, c, coll, f1, &deleted, &err));
    assert_true(deleted);
    assert_true(mdb_delete_one_counted(m, c, coll, f1, &deleted, &err));
    assert_false(deleted);
    bson_destroy(f1);

    assert_true(mdb_delete_one(m, c, coll, f0, &err));
    assert_true(mdb_find_one(m, c, coll, f0, &out, &found, &err));
    assert_false(found);
    assert_true(mdb_delete_many(m, c, coll, any, &err));
    memset(&r, 0, sizeof(r));
    assert_true(mdb_find_page(m, c, coll, any, "at", "_id", 5, collect_row, &r, &more, &err));
    assert_int_equal(r.n, 0);
    assert_true(mdb_is_up(m));
    bson_destroy(any);
    bson_destroy(f0);
    bson_destroy(fx);
    bson_destroy(inc);
    bson_destroy(inc2);
    mdb_client_push(m, c);
    mdb_close(m);
}

/* An ordered insert that the server refuses at one document says which one: the documents
 * before it are written, the ones after it are not. */
static void test_insert_many_refused(void **state)
{
    (void)state;
    mdb_t *m = open_db(uri, 3000);
    cx_error_t err;
    size_t refused = 99;
    mongoc_client_t *c = mdb_client_pop(m, &err);
    assert_non_null(c);
    bson_t *any = BCON_NEW("group", BCON_UTF8("ops"));
    assert_true(mdb_delete_many(m, c, "mdb_many", any, &err));
    bson_t *a = doc_of("many-a", 1), *b = doc_of("many-b", 2), *d = doc_of("many-d", 3);
    const bson_t *docs[] = {a, b, a, d};
    assert_false(mdb_insert_many(m, c, "mdb_many", docs, 4, &refused, &err));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    assert_int_equal(refused, 2);
    bson_t out;
    bool found = true;
    bson_t *fd = BCON_NEW("_id", BCON_UTF8("many-d"));
    assert_true(mdb_find_one(m, c, "mdb_many", fd, &out, &found, &err));
    assert_false(found);
    const bson_t *ok[] = {d};
    assert_true(mdb_insert_many(m, c, "mdb_many", ok, 1, &refused, &err));
    bson_destroy(fd);
    bson_destroy(a);
    bson_destroy(b);
    bson_destroy(d);
    bson_destroy(any);
    mdb_client_push(m, c);
    mdb_close(m);
}

/* ---- the down state -------------------------------------------------------------------- */

/* Wait (bounded) until the state is down, e.g. after the database went away. */
static void wait_down(mdb_t *m, int64_t bound_ms)
{
    int64_t t0 = tk_mono_ms();
    while (mdb_is_up(m) && tk_mono_ms() - t0 < bound_ms)
        usleep(2000);
    assert_false(mdb_is_up(m));
}

/* Each of n calls fails with unavailable in under 100 ms; returns the slowest. */
static int64_t expect_fast_failures(mdb_t *m, int n)
{
    int64_t worst = 0;
    cx_error_t err;
    for (int i = 0; i < n; i++) {
        int64_t t0 = tk_mono_ms();
        mongoc_client_t *c = mdb_client_pop(m, &err);
        assert_null(c);
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        assert_non_null(strstr(err.message, "database is down"));
        assert_false(mdb_ping(m, &err));
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        int64_t dt = tk_mono_ms() - t0;
        if (dt > worst)
            worst = dt;
        assert_true(dt < 100);
    }
    return worst;
}

/* With the production timeout (3 s), a refused connection costs at most one failure: every
 * call after it answers unavailable at once instead of waiting out server selection. */
static void test_refused_fails_fast(void **state)
{
    (void)state;
    cx_error_t err;
    int port = tk_free_port("127.0.0.1");
    char dead[64];
    snprintf(dead, sizeof(dead), "mongodb://127.0.0.1:%d/", port);
    mdb_t *m = open_db(dead, 3000);
    int64_t t0 = tk_mono_ms();
    assert_false(mdb_ping(m, &err)); /* the first failure (or the prober's, if it came first) */
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    int64_t first = tk_mono_ms() - t0;
    wait_down(m, 3000);
    int64_t worst = expect_fast_failures(m, 20);
    printf("refused connection: first failure %lld ms, then each call <= %lld ms\n",
           (long long)first, (long long)worst);
    mdb_close(m);
}

/* The database stops, then listens again on the same port: calls fail fast while it is gone
 * (the client popped before the outage too), and work again within 1 s of it listening. */
static void test_restart_resumes(void **state)
{
    (void)state;
    tk_ferretdb_t d;
    cx_error_t err;
    bson_t out;
    bool found = false;
    tk_ferretdb_init(&d);
    mdb_t *m = open_db(d.uri, 3000);
    mongoc_client_t *held = mdb_client_pop(m, &err);
    assert_non_null(held);
    bson_t *doc = BCON_NEW("_id", BCON_UTF8("restart-1"));
    assert_true(mdb_insert_one(m, held, "mdb_restart", doc, &err));

    tk_ferretdb_stop(&d);
    int64_t t0 = tk_mono_ms();
    assert_false(mdb_find_one(m, held, "mdb_restart", doc, &out, &found, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    int64_t first = tk_mono_ms() - t0;
    wait_down(m, 3000);
    int64_t worst = expect_fast_failures(m, 10);
    t0 = tk_mono_ms();
    assert_false(mdb_find_one(m, held, "mdb_restart", doc, &out, &found, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(tk_mono_ms() - t0 < 100);

    tk_ferretdb_start(&d);
    int64_t listening = tk_ferretdb_wait_listening(&d), back = 0;
    while (!back && tk_mono_ms() - listening < 5000) {
        mongoc_client_t *c = mdb_client_pop(m, &err);
        if (c && mdb_find_one(m, c, "mdb_restart", doc, &out, &found, &err)) {
            back = tk_mono_ms();
            assert_true(found);
            bson_destroy(&out);
        }
        mdb_client_push(m, c);
        if (!back)
            usleep(10000);
    }
    assert_true(back > 0);
    /* The client held through the outage works again too. */
    assert_true(mdb_find_one(m, held, "mdb_restart", doc, &out, &found, &err));
    bson_destroy(&out);
    printf("restart: first failure %lld ms, then each call <= %lld ms; resumed %lld ms after "
           "the database listened again\n",
           (long long)first, (long long)worst, (long long)(back - listening));
    assert_true(back - listening < 1000);
    bson_destroy(doc);
    mdb_client_push(m, held);
    mdb_close(m);
    tk_ferretdb_stop(&d);
}

/* A database that answers late but within the operations' timeout is not declared down by the
 * prober, whose ping waits as long as an operation would; one frozen beyond that timeout is,
 * and comes back once it answers again. */
static void test_slow_is_not_down(void **state)
{
    (void)state;
    tk_ferretdb_t d;
    cx_error_t err;
    tk_ferretdb_init(&d);
    mdb_t *m = open_db(d.uri, 1500);
    assert_true(mdb_ping(m, &err));
    tk_ferretdb_freeze(&d);
    int64_t t0 = tk_mono_ms();
    while (tk_mono_ms() - t0 < 900) { /* several probe periods, below the timeout */
        assert_true(mdb_is_up(m));
        usleep(5000);
    }
    kill(d.pid, SIGCONT);
    assert_true(mdb_ping(m, &err));
    assert_true(mdb_is_up(m));

    tk_ferretdb_freeze(&d);
    t0 = tk_mono_ms();
    assert_false(mdb_ping(m, &err)); /* the operation's own timeout */
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    int64_t hung = tk_mono_ms() - t0;
    assert_true(hung >= 1400);
    assert_false(mdb_is_up(m));
    kill(d.pid, SIGCONT);
    int64_t t1 = tk_mono_ms();
    while (!mdb_is_up(m) && tk_mono_ms() - t1 < 5000)
        usleep(5000);
    assert_true(mdb_is_up(m));
    assert_true(mdb_ping(m, &err));
    printf("frozen database: declared down after %lld ms (timeout 1500), up %lld ms after it "
           "thawed\n",
           (long long)hung, (long long)(tk_mono_ms() - t1));
    mdb_close(m);
    tk_ferretdb_stop(&d);
}

static const char *test_getenv(void *ctx, const char *name)
{
    (void)ctx;
    if (strcmp(name, "CREDEX_MONGO_URI") == 0)
        return uri;
    if (strcmp(name, "CREDEX_MONGO_DB") == 0)
        return dbname;
    return NULL;
}

static void test_cmd_db(void **state)
{
    (void)state;
    cx_config_t *cfg = NULL;
    cx_error_t err;
    assert_true(cx_config_load(&cfg, test_getenv, NULL, &err));
    char a0[] = "db", a1[] = "init-indexes", a2[] = "bogus";
    char *argv1[] = {a0, a1, NULL};
    char *argv2[] = {a0, a2, NULL};
    char *argv3[] = {a0, NULL};
    assert_int_equal(credexctl_cmd_db(cfg, 2, argv1), 0);
    assert_int_equal(credexctl_cmd_db(cfg, 2, argv1), 0); /* idempotent */
    assert_int_equal(credexctl_cmd_db(cfg, 2, argv2), 2);
    assert_int_equal(credexctl_cmd_db(cfg, 1, argv3), 2);
    cx_config_free(cfg);
}

int main(void)
{
    snprintf(dbname, sizeof(dbname), "mdbtest_%d", (int)getpid());
    if (!tk_ferretdb_fixture_uri(uri, sizeof(uri)))
        return 1;
    mdb_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_bad_uri),
        cmocka_unit_test(test_init_indexes_idempotent),
        cmocka_unit_test(test_duplicate_is_conflict),
        cmocka_unit_test(test_operations),
        cmocka_unit_test(test_insert_many_refused),
        cmocka_unit_test(test_outage_is_unavailable_in_time),
        cmocka_unit_test(test_refused_fails_fast),
        cmocka_unit_test(test_restart_resumes),
        cmocka_unit_test(test_slow_is_not_down),
        cmocka_unit_test(test_cmd_db),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return rc;
}
