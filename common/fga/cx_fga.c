/* cx_fga: see cx_fga.h. */
#include "common/fga/cx_fga.h"
#include "common/fga/cx_fga_cache.h"
#include "common/http/cx_http.h"
#include "common/metrics/cx_metrics.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FGA_POOL_MAX 64
/* The changelog is read in pages of this many changes, at most FGA_WATCH_PAGES per poll (a
 * poll that saw any change flushes anyway; more pages only catch up faster after a burst). */
#define FGA_WATCH_PAGE  100
#define FGA_WATCH_PAGES 10
/* The first poll (and the first after a failure) starts this far back in the changelog:
 * OpenFGA refuses a start_time that is not in its past, so this is the clock skew between
 * credex and OpenFGA that the cache tolerates; a larger skew makes every poll fail, which only
 * turns the cache off (fail closed, checks go live). */
#define FGA_WATCH_BACK_S 5
#define FGA_TOKEN_MAX    1024

struct cx_fga {
    char *url;
    char *store_id;
    char *model_id; /* "" = latest */
    /* Up to FGA_POOL_MAX idle connections, kept alive between calls: a fresh TCP connection
     * per check would dominate the cost of a retrieval. */
    cx_http_t *http;

    /* The answer cache and its watcher (NULL / not started when cache_ttl_ms is 0). */
    cx_fga_cache_t *cache;
    atomic_uint_fast64_t hits, misses;
    unsigned watch_ms;
    bool watching; /* the thread was started */
    pthread_t watcher;
    pthread_mutex_t wmu; /* guards stop and pairs with wcv */
    pthread_cond_t wcv;
    atomic_bool stop;
    /* Watcher-thread only: where the next poll reads from: the last continuation token, or,
     * when empty, the changelog from start_time on. */
    char token[FGA_TOKEN_MAX];
    char start_time[40];
};

static void *fga_watch_main(void *arg);

static int64_t fga_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Start the cache and its watcher; false (nothing started) on failure. */
static bool fga_watch_start(cx_fga_t *f, const cx_fga_options_t *opts, cx_error_t *err)
{
    f->watch_ms = opts->watch_ms ? opts->watch_ms : 100;
    f->cache = cx_fga_cache_new((int64_t)opts->cache_ttl_ms * 1000000,
                                (int64_t)f->watch_ms * 3 * 1000000, CX_FGA_CACHE_ENTRIES);
    if (!f->cache)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->wcv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&f->wmu, NULL);
    if (pthread_create(&f->watcher, NULL, fga_watch_main, f) != 0) {
        pthread_cond_destroy(&f->wcv);
        pthread_mutex_destroy(&f->wmu);
        cx_fga_cache_free(f->cache);
        f->cache = NULL;
        return cx_error_set(err, CX_ERR_INTERNAL, "cannot start the policy changelog watcher");
    }
    f->watching = true;
    return true;
}

cx_fga_t *cx_fga_new(const cx_fga_options_t *opts, cx_error_t *err)
{
    if (!opts || !opts->url || !*opts->url || !opts->store_id || !*opts->store_id) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "OpenFGA needs CREDEX_OPENFGA_URL and CREDEX_OPENFGA_STORE_ID");
        return NULL;
    }
    cx_fga_t *f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    atomic_init(&f->hits, 0);
    atomic_init(&f->misses, 0);
    atomic_init(&f->stop, false);
    size_t ul = strlen(opts->url);
    while (ul > 0 && opts->url[ul - 1] == '/')
        ul--;
    f->url = strndup(opts->url, ul);
    f->store_id = strdup(opts->store_id);
    f->model_id = strdup(opts->model_id ? opts->model_id : "");
    if (!f->url || !f->store_id || !f->model_id)
        goto fail;
    /* OpenFGA is a configured internal endpoint (loopback, or a cluster-internal service), so
     * plain http is allowed for it; its URL is not taken from any request. */
    cx_http_options_t ho = {.name = "policy service",
                            .metrics_target = "openfga",
                            .allow_http = true,
                            .timeout_ms = opts->timeout_ms ? opts->timeout_ms : 2000,
                            .max_response_bytes = CX_FGA_RESPONSE_MAX,
                            .pool_max = FGA_POOL_MAX};
    if (!(f->http = cx_http_new(&ho, err))) {
        cx_fga_free(f);
        return NULL;
    }
    if (opts->cache_ttl_ms && !fga_watch_start(f, opts, err)) {
        cx_fga_free(f);
        return NULL;
    }
    return f;
fail:
    cx_fga_free(f);
    cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return NULL;
}

void cx_fga_free(cx_fga_t *fga)
{
    if (!fga)
        return;
    if (fga->watching) {
        pthread_mutex_lock(&fga->wmu);
        atomic_store(&fga->stop, true);
        pthread_cond_signal(&fga->wcv);
        pthread_mutex_unlock(&fga->wmu);
        pthread_join(fga->watcher, NULL);
        pthread_cond_destroy(&fga->wcv);
        pthread_mutex_destroy(&fga->wmu);
    }
    cx_fga_cache_free(fga->cache);
    free(fga->url);
    free(fga->store_id);
    free(fga->model_id);
    cx_http_free(fga->http);
    free(fga);
}

bool cx_fga_tuple_set(cx_fga_tuple_t *t, const char *user, const char *relation, const char *object)
{
    if (!user || !relation || !object || !*user || !*relation || !*object ||
        strlen(user) >= sizeof(t->user) || strlen(relation) >= sizeof(t->relation) ||
        strlen(object) >= sizeof(t->object))
        return false;
    strcpy(t->user, user);
    strcpy(t->relation, relation);
    strcpy(t->object, object);
    return true;
}

/* The watcher's transfers end early when cx_fga_free asks it to stop. */
static bool fga_watch_stopping(void *ud)
{
    return atomic_load(&((cx_fga_t *)ud)->stop);
}

/* ---- decoders of OpenFGA's answers: pure functions of the body (fuzz/fuzz_fga.c) -------- */

/* The body as a JSON object, or NULL (CX_ERR_UNAVAILABLE: an answer we cannot read is no
 * answer, so the caller fails closed). */
static json_t *fga_parse_body(const char *data, size_t len, cx_error_t *err)
{
    json_t *j = data && len ? json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed answer");
        return NULL;
    }
    return j;
}

/* Check: {"allowed": bool, ...}. */
static bool fga_decode_check(json_t *resp, bool *allowed, cx_error_t *err)
{
    json_t *a = json_object_get(resp, "allowed");
    if (!json_is_boolean(a))
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "policy service sent a malformed check answer");
    *allowed = json_is_true(a);
    return true;
}

/* One page of Read: {"tuples": [{"key": {user, relation, object}}...], "continuation_token"}.
 * Appends to *v (*count entries, at most max in all); *token: the next page's token (malloc'd)
 * or NULL at the end. Tuples with a missing or oversized part are skipped (they cannot be
 * credex's); a page that is not of this shape is malformed. */
static bool fga_decode_tuples(json_t *resp, size_t max, cx_fga_tuple_t **v, size_t *count,
                              char **token, cx_error_t *err)
{
    json_t *tuples = json_object_get(resp, "tuples"), *t;
    json_t *ct = json_object_get(resp, "continuation_token");
    if ((tuples && !json_is_array(tuples)) || (ct && !json_is_string(ct)))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed read answer");
    size_t i;
    json_array_foreach(tuples, i, t)
    {
        json_t *k = json_object_get(t, "key");
        if (*count >= max)
            return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "more than %zu tuples", max);
        cx_fga_tuple_t *nv = realloc(*v, (*count + 1) * sizeof(**v));
        if (!nv)
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        *v = nv;
        if (cx_fga_tuple_set(&nv[*count], json_string_value(json_object_get(k, "user")),
                             json_string_value(json_object_get(k, "relation")),
                             json_string_value(json_object_get(k, "object"))))
            (*count)++;
    }
    const char *next = ct ? json_string_value(ct) : NULL;
    *token = NULL;
    if (next && *next && !(*token = strdup(next)))
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return true;
}

/* ListObjects: {"objects": ["type:id", ...]} -> ids of objects of `type` (others skipped). */
static bool fga_decode_objects(json_t *resp, const char *type, char ***ids, size_t *n,
                               cx_error_t *err)
{
    json_t *objs = json_object_get(resp, "objects"), *o;
    if (!json_is_array(objs))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed list answer");
    char **v = calloc(json_array_size(objs) + 1, sizeof(*v));
    size_t count = 0, tl = strlen(type), i;
    if (!v)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    json_array_foreach(objs, i, o)
    {
        const char *s = json_string_value(o);
        if (!s || strncmp(s, type, tl) != 0 || s[tl] != ':' || !s[tl + 1])
            continue;
        if (!(v[count] = strdup(s + tl + 1))) {
            cx_fga_strv_free(v, count);
            return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        }
        count++;
    }
    *ids = v;
    *n = count;
    return true;
}

/* One page of ReadChanges: {"changes": [...], "continuation_token": "..."}. *n: changes in
 * it; the token (possibly "") is copied to token[tokensz] when present, else token[0] = 0. */
static bool fga_decode_changes(json_t *resp, char *token, size_t tokensz, size_t *n,
                               cx_error_t *err)
{
    json_t *changes = json_object_get(resp, "changes");
    json_t *tok = json_object_get(resp, "continuation_token");
    if (!json_is_array(changes) || (tok && !json_is_string(tok)))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed changelog");
    const char *t = tok ? json_string_value(tok) : "";
    if (strlen(t) >= tokensz)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent an oversized token");
    strcpy(token, t);
    *n = json_array_size(changes);
    return true;
}

bool cx_fga_decode_answer(cx_fga_answer_t kind, const char *body, size_t len, cx_error_t *err)
{
    json_t *resp = fga_parse_body(body, len, err);
    if (!resp)
        return false;
    bool ok = false, allowed = false;
    size_t n = 0;
    switch (kind) {
    case CX_FGA_ANSWER_CHECK:
        ok = fga_decode_check(resp, &allowed, err);
        break;
    case CX_FGA_ANSWER_READ: {
        cx_fga_tuple_t *v = NULL;
        char *token = NULL;
        ok = fga_decode_tuples(resp, 1000, &v, &n, &token, err);
        free(v);
        free(token);
        break;
    }
    case CX_FGA_ANSWER_LIST_OBJECTS: {
        char **ids = NULL;
        if ((ok = fga_decode_objects(resp, "secret_ref", &ids, &n, err)))
            cx_fga_strv_free(ids, n);
        break;
    }
    case CX_FGA_ANSWER_CHANGES: {
        char token[FGA_TOKEN_MAX];
        ok = fga_decode_changes(resp, token, sizeof(token), &n, err);
        break;
    }
    default:
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "unknown answer kind");
    }
    json_decref(resp);
    return ok;
}

/* The metrics label of an OpenFGA path: its last segment, one of a fixed set. */
static const char *fga_op_label(const char *path)
{
    static const char *const ops[] = {"check", "write", "read", "list-objects", "changes"};
    const char *seg = strrchr(path, '/');
    seg = seg != NULL ? seg + 1 : path;
    size_t n = strcspn(seg, "?");
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strlen(ops[i]) == n && strncmp(seg, ops[i], n) == 0)
            return ops[i];
    return "other";
}

static bool fga_http_do(cx_fga_t *f, const char *path, json_t *body, json_t **resp, bool watcher,
                        cx_error_t *err);

/* fga_http_do, counted and timed (credex_openfga_*). */
static bool fga_http_ex(cx_fga_t *f, const char *path, json_t *body, json_t **resp, bool watcher,
                        cx_error_t *err)
{
    uint64_t t0 = cx_metrics_now_us();
    bool ok = fga_http_do(f, path, body, resp, watcher, err);
    cx_metrics_client_call(CX_METRICS_FGA, "openfga", fga_op_label(path),
                           ok ? "ok" : cx_code_reason(err->code), cx_metrics_now_us() - t0);
    return ok;
}

/* One HTTP exchange with OpenFGA. body NULL = GET. On success *resp is the parsed JSON object
 * (when resp is not NULL). HTTP 4xx is CX_ERR_INVALID_ARGUMENT (our request was wrong: a bug,
 * or a name the model does not know), everything else that is not a 2xx is CX_ERR_UNAVAILABLE.
 * watcher: the transfer aborts when the client is being freed. */
static bool fga_http_do(cx_fga_t *f, const char *path, json_t *body, json_t **resp, bool watcher,
                        cx_error_t *err)
{
    static const cx_http_header_t json_type = {"content-type", "application/json"};
    bool ok = false;
    char url[1024];
    char *payload = NULL;
    cx_http_response_t r = {0};
    if (snprintf(url, sizeof(url), "%s%s", f->url, path) >= (int)sizeof(url))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "OpenFGA URL too long");
    if (body && !(payload = json_dumps(body, JSON_COMPACT)))
        return cx_error_set(err, CX_ERR_INTERNAL, "policy service: cannot encode the request");
    cx_http_request_t rq = {.url = url,
                            .headers = payload ? &json_type : NULL,
                            .nheaders = payload ? 1 : 0,
                            .body = payload,
                            .body_len = payload ? strlen(payload) : 0,
                            .abort = watcher ? fga_watch_stopping : NULL,
                            .abort_ctx = f};
    if (!cx_http_do(f->http, &rq, &r, err))
        goto out;
    if (r.status >= 400 && r.status < 500) {
        cx_error_set_detail(err, CX_ERR_INVALID_ARGUMENT, CX_DETAIL_HTTP_STATUS,
                            "policy service refused the request (HTTP %ld)", r.status);
        goto out;
    }
    if (r.status < 200 || r.status >= 300) {
        cx_error_set_detail(err, CX_ERR_UNAVAILABLE, CX_DETAIL_HTTP_STATUS,
                            "policy service failed (HTTP %ld)", r.status);
        goto out;
    }
    if (resp && !(*resp = fga_parse_body(r.body, r.body_len, err)))
        goto out;
    ok = true;
out:
    cx_http_response_free(&r);
    free(payload);
    return ok;
}

static bool fga_http(cx_fga_t *f, const char *path, json_t *body, json_t **resp, cx_error_t *err)
{
    return fga_http_ex(f, path, body, resp, false, err);
}

static void store_path(cx_fga_t *f, const char *op, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "/stores/%s/%s", f->store_id, op);
}

static void add_model(cx_fga_t *f, json_t *body)
{
    if (f->model_id[0])
        json_object_set_new(body, "authorization_model_id", json_string(f->model_id));
}

/* Sharing and unsharing must take effect at once, even on a server with its check cache on. */
static void add_consistency(json_t *body)
{
    json_object_set_new(body, "consistency", json_string("HIGHER_CONSISTENCY"));
}

static json_t *tuple_json(const char *user, const char *relation, const char *object)
{
    json_t *t = json_object();
    if (user)
        json_object_set_new(t, "user", json_string(user));
    if (relation)
        json_object_set_new(t, "relation", json_string(relation));
    if (object)
        json_object_set_new(t, "object", json_string(object));
    return t;
}

/* The cache key: the three names, each ended by a NUL (names hold no NUL, so the encoding is
 * unambiguous). 0 when a name is missing or too long: such a check is not cached. */
#define FGA_KEY_MAX (2 * CX_FGA_NAME_MAX + 64 + 3)

static size_t fga_key(char *key, const char *user, const char *relation, const char *object)
{
    if (!user || !relation || !object)
        return 0;
    size_t ul = strlen(user), rl = strlen(relation), ol = strlen(object);
    if (ul >= CX_FGA_NAME_MAX || rl >= 64 || ol >= CX_FGA_NAME_MAX)
        return 0;
    memcpy(key, user, ul + 1);
    memcpy(key + ul + 1, relation, rl + 1);
    memcpy(key + ul + 1 + rl + 1, object, ol + 1);
    return ul + rl + ol + 3;
}

bool cx_fga_check(cx_fga_t *fga, const char *user, const char *relation, const char *object,
                  bool *allowed, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    char key[FGA_KEY_MAX];
    size_t keylen = fga->cache ? fga_key(key, user, relation, object) : 0;
    uint64_t gen = 0;
    if (keylen) {
        bool a = false;
        if (cx_fga_cache_get(fga->cache, key, keylen, fga_now_ns(), &a, &gen)) {
            atomic_fetch_add(&fga->hits, 1);
            if (allowed)
                *allowed = a;
            return true;
        }
    }
    atomic_fetch_add(&fga->misses, 1);
    bool ok = false;
    json_t *resp = NULL, *body = json_object();
    json_object_set_new(body, "tuple_key", tuple_json(user, relation, object));
    add_model(fga, body);
    add_consistency(body);
    char path[256];
    store_path(fga, "check", path, sizeof(path));
    bool a = false;
    if (!fga_http(fga, path, body, &resp, err) || !fga_decode_check(resp, &a, err))
        goto out;
    if (allowed)
        *allowed = a;
    if (keylen)
        cx_fga_cache_put(fga->cache, key, keylen, a, gen, fga_now_ns());
    ok = true;
out:
    json_decref(body);
    json_decref(resp);
    return ok;
}

static json_t *tuple_array(const cx_fga_tuple_t *t, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, tuple_json(t[i].user, t[i].relation, t[i].object));
    return a;
}

bool cx_fga_write(cx_fga_t *fga, const cx_fga_tuple_t *adds, size_t nadds,
                  const cx_fga_tuple_t *deletes, size_t ndeletes, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    if (nadds + ndeletes == 0)
        return true;
    if (nadds + ndeletes > 100)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "too many tuples in one write");
    json_t *body = json_object();
    if (nadds) {
        json_t *w = json_object();
        json_object_set_new(w, "tuple_keys", tuple_array(adds, nadds));
        /* Replays complete interrupted operations, so duplicates are expected. */
        json_object_set_new(w, "on_duplicate", json_string("ignore"));
        json_object_set_new(body, "writes", w);
    }
    if (ndeletes) {
        json_t *d = json_object();
        json_object_set_new(d, "tuple_keys", tuple_array(deletes, ndeletes));
        json_object_set_new(d, "on_missing", json_string("ignore"));
        json_object_set_new(body, "deletes", d);
    }
    add_model(fga, body);
    char path[256];
    store_path(fga, "write", path, sizeof(path));
    /* Before: a check of this process that read the generation before the write cannot store
     * its answer. After: nor can one whose live call ran while the write was in flight. After a
     * failure too, since a write that timed out may still have been applied. */
    if (fga->cache)
        cx_fga_cache_flush(fga->cache);
    bool ok = fga_http(fga, path, body, NULL, err);
    if (fga->cache)
        cx_fga_cache_flush(fga->cache);
    json_decref(body);
    return ok;
}

/* The read loop of cx_fga_read and cx_fga_read_each: each page decoded (at most max tuples in
 * all) and handed to page. */
static bool fga_read_pages(cx_fga_t *fga, const char *object, const char *relation,
                           const char *user, size_t max, cx_fga_page_fn page, void *ctx,
                           cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    bool ok = false;
    cx_fga_tuple_t *v = NULL;
    size_t total = 0;
    char *token = NULL;
    char path[256];
    store_path(fga, "read", path, sizeof(path));
    for (;;) {
        json_t *resp = NULL, *body = json_object();
        /* No tuple key at all reads the whole store. */
        if (object || relation || user)
            json_object_set_new(body, "tuple_key", tuple_json(user, relation, object));
        json_object_set_new(body, "page_size", json_integer(100));
        if (token)
            json_object_set_new(body, "continuation_token", json_string(token));
        bool got = fga_http(fga, path, body, &resp, err);
        json_decref(body);
        if (!got)
            goto out;
        free(token);
        token = NULL;
        size_t count = 0;
        got = fga_decode_tuples(resp, max - total, &v, &count, &token, err);
        json_decref(resp);
        if (!got || !page(ctx, v, count, err))
            goto out;
        total += count;
        if (!token)
            break;
    }
    ok = true;
out:
    free(token);
    free(v);
    return ok;
}

typedef struct fga_collect {
    cx_fga_tuple_t *v;
    size_t n;
} fga_collect_t;

static bool fga_collect_page(void *ctx, const cx_fga_tuple_t *t, size_t n, cx_error_t *err)
{
    fga_collect_t *c = ctx;
    if (n == 0)
        return true;
    cx_fga_tuple_t *nv = realloc(c->v, (c->n + n) * sizeof(*nv));
    if (!nv)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    memcpy(nv + c->n, t, n * sizeof(*nv));
    c->v = nv;
    c->n += n;
    return true;
}

bool cx_fga_read(cx_fga_t *fga, const char *object, const char *relation, const char *user,
                 size_t max, cx_fga_tuple_t **out, size_t *n, cx_error_t *err)
{
    fga_collect_t c = {0};
    if (!fga_read_pages(fga, object, relation, user, max, fga_collect_page, &c, err)) {
        free(c.v);
        return false;
    }
    *out = c.v;
    *n = c.n;
    return true;
}

bool cx_fga_read_each(cx_fga_t *fga, const char *object, cx_fga_page_fn page, void *ctx,
                      cx_error_t *err)
{
    return fga_read_pages(fga, object, NULL, NULL, SIZE_MAX, page, ctx, err);
}

void cx_fga_strv_free(char **v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

bool cx_fga_list_objects(cx_fga_t *fga, const char *user, const char *relation, const char *type,
                         char ***ids, size_t *n, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    json_t *resp = NULL, *body = json_object();
    json_object_set_new(body, "user", json_string(user));
    json_object_set_new(body, "relation", json_string(relation));
    json_object_set_new(body, "type", json_string(type));
    add_model(fga, body);
    add_consistency(body);
    char path[256];
    store_path(fga, "list-objects", path, sizeof(path));
    bool ok = fga_http(fga, path, body, &resp, err) && fga_decode_objects(resp, type, ids, n, err);
    json_decref(body);
    json_decref(resp);
    return ok;
}

bool cx_fga_ping(cx_fga_t *fga, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    /* The store itself, not just /healthz: a reachable server without our store is no use. */
    char path[256];
    snprintf(path, sizeof(path), "/stores/%s", fga->store_id);
    json_t *resp = NULL;
    bool ok = fga_http(fga, path, NULL, &resp, err);
    json_decref(resp);
    if (!ok && err && err->code == CX_ERR_INVALID_ARGUMENT)
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service has no store %s", fga->store_id);
    return ok;
}

void cx_fga_cache_stats(cx_fga_t *fga, cx_fga_cache_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!fga)
        return;
    out->hits = atomic_load(&fga->hits);
    out->misses = atomic_load(&fga->misses);
    if (!fga->cache)
        return;
    cx_fga_cache_counts_t c;
    cx_fga_cache_counts(fga->cache, fga_now_ns(), &c);
    out->enabled = true;
    out->fresh = c.fresh;
    out->flushes = c.flushes;
    out->polls = c.polls;
    out->poll_failures = c.poll_failures;
    out->entries = c.entries;
}

/* ---- the changelog watcher ------------------------------------------------------------------ */

/* Percent-encode s into out (RFC 3986 unreserved characters kept). false if it does not fit. */
static bool fga_query_escape(char *out, size_t outsz, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (o + (keep ? 1 : 3) >= outsz)
            return false;
        if (keep) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return true;
}

/* The start point of a watch that has no continuation token: a little before now (see
 * FGA_WATCH_BACK_S), in OpenFGA's RFC 3339 form. */
static void fga_watch_set_start(cx_fga_t *f)
{
    time_t t = time(NULL) - FGA_WATCH_BACK_S;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(f->start_time, sizeof(f->start_time), "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* One page of the changelog from the current position. *n: changes in it. Advances the
 * position when OpenFGA gives a token (with no new change, OpenFGA v1.22 answers the same
 * token, or "" when the read started from start_time; both keep the position). */
static bool fga_watch_page(cx_fga_t *f, size_t *n, cx_error_t *err)
{
    char q[3 * FGA_TOKEN_MAX + 64], path[3 * FGA_TOKEN_MAX + 512];
    bool ok = false;
    json_t *resp = NULL;
    if (!fga_query_escape(q, sizeof(q), f->token[0] ? f->token : f->start_time))
        return cx_error_set(err, CX_ERR_INTERNAL, "changelog position too long");
    snprintf(path, sizeof(path), "/stores/%s/changes?page_size=%d&%s=%s", f->store_id,
             FGA_WATCH_PAGE, f->token[0] ? "continuation_token" : "start_time", q);
    if (!fga_http_ex(f, path, NULL, &resp, true, err))
        return false;
    char t[FGA_TOKEN_MAX];
    ok = fga_decode_changes(resp, t, sizeof(t), n, err);
    if (ok && t[0])
        strcpy(f->token, t);
    json_decref(resp);
    return ok;
}

/* One poll: read the changelog to its end (at most FGA_WATCH_PAGES pages) and tell the cache.
 * On failure the position is dropped: the cache is flushed and stays unusable until a later
 * poll succeeds, from a fresh start point, which is enough because nothing cached before that
 * success survives it (cx_fga_cache_poll_ok bumps the generation on a return to validity). */
static void fga_watch_poll(cx_fga_t *f, int64_t started)
{
    cx_error_t e;
    size_t total = 0;
    if (!f->token[0] && !f->start_time[0])
        fga_watch_set_start(f);
    for (int page = 0; page < FGA_WATCH_PAGES; page++) {
        size_t n = 0;
        if (!fga_watch_page(f, &n, &e)) {
            if (!atomic_load(&f->stop))
                cx_fga_cache_poll_failed(f->cache);
            f->token[0] = f->start_time[0] = '\0';
            return;
        }
        total += n;
        if (n < FGA_WATCH_PAGE)
            break;
    }
    cx_fga_cache_poll_ok(f->cache, started, total > 0);
}

static void *fga_watch_main(void *arg)
{
    cx_fga_t *f = arg;
    while (!atomic_load(&f->stop)) {
        int64_t started = fga_now_ns();
        fga_watch_poll(f, started);
        /* Every watch_ms from the start of the previous poll; at once if the poll took longer. */
        int64_t next = started + (int64_t)f->watch_ms * 1000000;
        struct timespec ts = {.tv_sec = next / 1000000000, .tv_nsec = next % 1000000000};
        pthread_mutex_lock(&f->wmu);
        while (!atomic_load(&f->stop) && fga_now_ns() < next)
            if (pthread_cond_timedwait(&f->wcv, &f->wmu, &ts) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&f->wmu);
    }
    return NULL;
}
