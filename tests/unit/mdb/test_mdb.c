/*
 * Unit tests of common/mdb: error mapping (pure), and against a real FerretDB started by the
 * ctest fixture (mdb_ferretdb, $CREDEX_TEST_FERRETDB_DIR/uri): index bootstrap (idempotent,
 * explicit degradation), duplicate keys as conflict, an outage as unavailable within the
 * timeout, and `credexctl db init-indexes` through credexctl_cmd_db.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/config/cx_config.h"
#include "common/mdb/mdb.h"
#include "tools/credexctl/cmd_db.h"

static char uri[256];
static char dbname[64];

static mdb_t *open_db(const char *u, unsigned timeout_ms)
{
    mdb_t *m = NULL;
    cx_error_t err;
    mdb_options_t o = {.uri = u,
                       .db = dbname,
                       .timeout_ms = timeout_ms,
                       .write_majority = true,
                       .pool_max = 4,
                       .app_name = "test_mdb"};
    assert_true(mdb_open(&m, &o, &err));
    return m;
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
    /* 21 indexes in seed 003; every one is either created or explicitly degraded. */
    assert_int_equal(r1.ok + r1.degraded, 21);
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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_outage_is_unavailable_in_time(void **state)
{
    (void)state;
    /* Port 9 (discard) on loopback: nothing listens, connections are refused. */
    mdb_t *m = open_db("mongodb://127.0.0.1:9/", 300);
    cx_error_t err;
    int64_t t0 = now_ms();
    assert_false(mdb_ping(m, &err));
    int64_t dt = now_ms() - t0;
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(dt < 2000);
    report_t r = {0};
    assert_false(mdb_init_indexes(m, collect, &r, NULL, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    mdb_close(m);
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
    const char *dir = getenv("CREDEX_TEST_FERRETDB_DIR");
    char path[512];
    FILE *f;
    snprintf(dbname, sizeof(dbname), "mdbtest_%d", (int)getpid());
    if (!dir) {
        fprintf(stderr, "CREDEX_TEST_FERRETDB_DIR is not set (ctest's mdb_ferretdb fixture)\n");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/uri", dir);
    if (!(f = fopen(path, "r")) || !fgets(uri, sizeof(uri), f)) {
        fprintf(stderr, "cannot read %s\n", path);
        return 1;
    }
    fclose(f);
    uri[strcspn(uri, "\n")] = '\0';
    mdb_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_bad_uri),
        cmocka_unit_test(test_init_indexes_idempotent),
        cmocka_unit_test(test_duplicate_is_conflict),
        cmocka_unit_test(test_outage_is_unavailable_in_time),
        cmocka_unit_test(test_cmd_db),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    mongoc_cleanup();
    return rc;
}
