/* cx_fga: see cx_fga.h. */
#include "common/fga/cx_fga.h"
#include "common/http/cx_http.h"

#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FGA_POOL_MAX 64

struct cx_fga {
    char *url;
    char *store_id;
    char *model_id; /* "" = latest */
    unsigned timeout_ms;
    bool curl_inited;
    /* Idle handles, reused so that calls keep their HTTP connection to OpenFGA alive (a fresh
     * TCP connection per check would dominate the cost of a retrieval). Guarded by mu. */
    pthread_mutex_t mu;
    CURL *idle[FGA_POOL_MAX];
    size_t nidle;
};

cx_fga_t *cx_fga_new(const cx_fga_options_t *opts, cx_error_t *err)
{
    if (!opts || !opts->url || !*opts->url || !opts->store_id || !*opts->store_id) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                     "OpenFGA needs CREDEX_OPENFGA_URL and CREDEX_OPENFGA_STORE_ID");
        return NULL;
    }
    /* Reference-counted inside libcurl; done here, at start-up, so that no worker thread is
     * the first to initialise it. */
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cx_error_set(err, CX_ERR_INTERNAL, "cannot initialise libcurl");
        return NULL;
    }
    cx_fga_t *f = calloc(1, sizeof(*f));
    if (!f)
        goto fail;
    f->curl_inited = true;
    pthread_mutex_init(&f->mu, NULL);
    size_t ul = strlen(opts->url);
    while (ul > 0 && opts->url[ul - 1] == '/')
        ul--;
    f->url = strndup(opts->url, ul);
    f->store_id = strdup(opts->store_id);
    f->model_id = strdup(opts->model_id ? opts->model_id : "");
    f->timeout_ms = opts->timeout_ms ? opts->timeout_ms : 2000;
    if (!f->url || !f->store_id || !f->model_id)
        goto fail;
    return f;
fail:
    if (f)
        cx_fga_free(f);
    else
        curl_global_cleanup();
    cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    return NULL;
}

void cx_fga_free(cx_fga_t *fga)
{
    if (!fga)
        return;
    free(fga->url);
    free(fga->store_id);
    free(fga->model_id);
    if (fga->curl_inited) {
        for (size_t i = 0; i < fga->nidle; i++)
            curl_easy_cleanup(fga->idle[i]);
        pthread_mutex_destroy(&fga->mu);
        curl_global_cleanup();
    }
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

static CURL *handle_take(cx_fga_t *f)
{
    CURL *h = NULL;
    pthread_mutex_lock(&f->mu);
    if (f->nidle > 0)
        h = f->idle[--f->nidle];
    pthread_mutex_unlock(&f->mu);
    if (h) {
        curl_easy_reset(h); /* options go, the connection cache stays */
        return h;
    }
    return curl_easy_init();
}

static void handle_give(cx_fga_t *f, CURL *h)
{
    if (!h)
        return;
    pthread_mutex_lock(&f->mu);
    if (f->nidle < FGA_POOL_MAX) {
        f->idle[f->nidle++] = h;
        h = NULL;
    }
    pthread_mutex_unlock(&f->mu);
    if (h)
        curl_easy_cleanup(h);
}

/* One HTTP exchange with OpenFGA. body NULL = GET. On success *resp is the parsed JSON object
 * (may be NULL for GET when want_json is false). HTTP 4xx is CX_ERR_INVALID_ARGUMENT (our
 * request was wrong: a bug, or a name the model does not know), everything else that is not a
 * 2xx is CX_ERR_UNAVAILABLE. */
static bool fga_http(cx_fga_t *f, const char *path, json_t *body, json_t **resp, cx_error_t *err)
{
    bool ok = false;
    char url[1024];
    char *payload = NULL;
    cx_http_buf_t b = {.max = CX_FGA_RESPONSE_MAX};
    struct curl_slist *hdrs = NULL;
    CURL *h = NULL;
    if (snprintf(url, sizeof(url), "%s%s", f->url, path) >= (int)sizeof(url)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "OpenFGA URL too long");
        goto out;
    }
    h = handle_take(f);
    if (!h) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service: cannot create an HTTP handle");
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)f->timeout_ms);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cx_http_buf_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    if (body) {
        payload = json_dumps(body, JSON_COMPACT);
        if (!payload) {
            cx_error_set(err, CX_ERR_INTERNAL, "policy service: cannot encode the request");
            goto out;
        }
        hdrs = curl_slist_append(hdrs, "content-type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    }
    CURLcode rc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service unreachable: %s",
                     b.too_big ? "response too large" : curl_easy_strerror(rc));
        goto out;
    }
    if (status >= 400 && status < 500) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "policy service refused the request (HTTP %ld)",
                     status);
        goto out;
    }
    if (status < 200 || status >= 300) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service failed (HTTP %ld)", status);
        goto out;
    }
    if (resp) {
        json_t *j = b.data ? json_loadb(b.data, b.len, 0, NULL) : NULL;
        if (!json_is_object(j)) {
            json_decref(j);
            cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed answer");
            goto out;
        }
        *resp = j;
    }
    ok = true;
out:
    curl_slist_free_all(hdrs);
    free(payload);
    cx_http_buf_reset(&b);
    /* A handle whose transfer failed may hold a broken connection: do not keep it. */
    if (ok)
        handle_give(f, h);
    else if (h)
        curl_easy_cleanup(h);
    return ok;
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

bool cx_fga_check(cx_fga_t *fga, const char *user, const char *relation, const char *object,
                  bool *allowed, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    bool ok = false;
    json_t *resp = NULL, *body = json_object();
    json_object_set_new(body, "tuple_key", tuple_json(user, relation, object));
    add_model(fga, body);
    add_consistency(body);
    char path[256];
    store_path(fga, "check", path, sizeof(path));
    if (!fga_http(fga, path, body, &resp, err))
        goto out;
    json_t *a = json_object_get(resp, "allowed");
    if (!json_is_boolean(a)) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed check answer");
        goto out;
    }
    if (allowed)
        *allowed = json_is_true(a);
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
    bool ok = fga_http(fga, path, body, NULL, err);
    json_decref(body);
    return ok;
}

bool cx_fga_read(cx_fga_t *fga, const char *object, const char *relation, const char *user,
                 size_t max, cx_fga_tuple_t **out, size_t *n, cx_error_t *err)
{
    if (!fga)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service not configured");
    bool ok = false;
    cx_fga_tuple_t *v = NULL;
    size_t count = 0;
    char *token = NULL;
    char path[256];
    store_path(fga, "read", path, sizeof(path));
    for (;;) {
        json_t *resp = NULL, *body = json_object();
        json_object_set_new(body, "tuple_key", tuple_json(user, relation, object));
        json_object_set_new(body, "page_size", json_integer(100));
        if (token)
            json_object_set_new(body, "continuation_token", json_string(token));
        bool got = fga_http(fga, path, body, &resp, err);
        json_decref(body);
        if (!got)
            goto out;
        json_t *tuples = json_object_get(resp, "tuples"), *t;
        size_t i;
        json_array_foreach(tuples, i, t)
        {
            json_t *k = json_object_get(t, "key");
            if (count >= max) {
                json_decref(resp);
                cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "more than %zu tuples", max);
                goto out;
            }
            cx_fga_tuple_t *nv = realloc(v, (count + 1) * sizeof(*v));
            if (!nv) {
                json_decref(resp);
                cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
                goto out;
            }
            v = nv;
            if (cx_fga_tuple_set(&v[count], json_string_value(json_object_get(k, "user")),
                                 json_string_value(json_object_get(k, "relation")),
                                 json_string_value(json_object_get(k, "object"))))
                count++;
        }
        const char *ct = json_string_value(json_object_get(resp, "continuation_token"));
        free(token);
        token = ct && *ct ? strdup(ct) : NULL;
        json_decref(resp);
        if (!token)
            break;
    }
    *out = v;
    *n = count;
    v = NULL;
    ok = true;
out:
    free(token);
    free(v);
    return ok;
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
    bool ok = false;
    json_t *resp = NULL, *body = json_object();
    char **v = NULL;
    size_t count = 0;
    json_object_set_new(body, "user", json_string(user));
    json_object_set_new(body, "relation", json_string(relation));
    json_object_set_new(body, "type", json_string(type));
    add_model(fga, body);
    add_consistency(body);
    char path[256];
    store_path(fga, "list-objects", path, sizeof(path));
    if (!fga_http(fga, path, body, &resp, err))
        goto out;
    json_t *objs = json_object_get(resp, "objects"), *o;
    if (!json_is_array(objs)) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "policy service sent a malformed list answer");
        goto out;
    }
    v = calloc(json_array_size(objs) + 1, sizeof(*v));
    if (!v) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    size_t tl = strlen(type), i;
    json_array_foreach(objs, i, o)
    {
        const char *s = json_string_value(o);
        if (!s || strncmp(s, type, tl) != 0 || s[tl] != ':' || !s[tl + 1])
            continue;
        v[count] = strdup(s + tl + 1);
        if (!v[count]) {
            cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
            goto out;
        }
        count++;
    }
    *ids = v;
    *n = count;
    v = NULL;
    ok = true;
out:
    cx_fga_strv_free(v, count);
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
