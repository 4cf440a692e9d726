/*
 * cx_fga: a client of the OpenFGA HTTP API (Check, Write, Read, ListObjects), the policy
 * service of docs/IDENTITY.md. OpenFGA is the only source of truth for who may do what, so
 * every failure to get an answer is fail-closed: transport errors, timeouts and HTTP 5xx are
 * CX_ERR_UNAVAILABLE (with cx_http's detail), and a Check that did not answer `allowed: true`
 * is never "allowed". Requests go through common/http, which keeps the connections to OpenFGA
 * alive between calls; plain http is allowed for this configured internal endpoint.
 *
 * Objects and users are OpenFGA strings "type:id" or "type:id#relation" (e.g. "user:alice",
 * "team:eng#member", "secret_ref:sec_123"). Each is at most CX_FGA_NAME_MAX bytes.
 *
 * Check answer cache (cache_ttl_ms > 0; docs/AUTHZ_CACHE.md). Check answers, allowed and
 * denied alike, are kept in memory for at most cache_ttl_ms (at most CX_FGA_CACHE_ENTRIES of
 * them; past that an insert evicts one entry), and kept coherent with OpenFGA by a watcher
 * thread that polls the store's changelog (GET /stores/{id}/changes) every watch_ms, starting
 * a few seconds back from now (never the whole history) and then following the continuation
 * token, and that forgets every answer whenever a poll returns any change.
 * The bounds this gives:
 *   - a cx_fga_write through this cx_fga_t takes effect for this process at once: the cache is
 *     flushed before the write starts and again after it returns (also after a failed write,
 *     which may have been applied);
 *   - a tuple written by anyone else (another replica, a direct OpenFGA write) is seen by every
 *     check that starts 3 * watch_ms or more after that write returned (plus OpenFGA's
 *     changelog horizon offset, if one is configured there); whatever the changelog might not
 *     show is still bounded by cache_ttl_ms;
 *   - fail closed: an answer is served from memory only while the last successful poll started
 *     less than 3 * watch_ms ago. A failed poll (transport error, timeout, non-2xx, malformed
 *     answer) flushes at once and nothing is served or stored until a poll succeeds again, so
 *     during an OpenFGA outage every check goes live and fails CX_ERR_UNAVAILABLE, at the
 *     latest 3 * watch_ms after the outage began;
 *   - a live answer is stored only if no flush happened while it was being fetched (so an
 *     answer computed before a change never outlives the flush that change caused) and the
 *     watcher is fresh at that moment.
 * Live checks always ask for HIGHER_CONSISTENCY. cache_ttl_ms == 0 turns the cache and the
 * watcher thread off: every check is then a live call, exactly as without a cache.
 *
 * Thread-safety: a cx_fga_t's settings are immutable after creation; every call takes its own
 * handle from cx_http's pool and the cache takes one mutex for a bounded table walk (never
 * across HTTP), so calls may run concurrently from any thread. Every call blocks for at most
 * timeout_ms (a cache hit does not block). Library code: nothing is logged here.
 */
#ifndef CREDEX_COMMON_FGA_CX_FGA_H
#define CREDEX_COMMON_FGA_CX_FGA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

#define CX_FGA_NAME_MAX     256
#define CX_FGA_RESPONSE_MAX (4 * 1024 * 1024)

typedef struct cx_fga cx_fga_t;

typedef struct cx_fga_options {
    const char *url;       /* "http://127.0.0.1:8081" (no trailing slash needed) */
    const char *store_id;  /* required */
    const char *model_id;  /* "" or NULL = the store's latest model */
    unsigned timeout_ms;   /* whole-call timeout, >= 1 (0: 2000); also bounds each poll */
    unsigned cache_ttl_ms; /* life of a cached Check answer; 0: no cache and no watcher */
    unsigned watch_ms;     /* changelog poll interval (0: 100); answers stay usable for
                              3 * watch_ms after the start of the last successful poll */
} cx_fga_options_t;

#define CX_FGA_CACHE_ENTRIES 65536

/* Strings are copied. CX_ERR_INVALID_ARGUMENT when url or store_id is missing. With a cache,
 * starts the watcher thread (its first poll runs at once; until it succeeds every check is
 * live). */
cx_fga_t *cx_fga_new(const cx_fga_options_t *opts, cx_error_t *err);
/* NULL-safe. Stops and joins the watcher: an idle watcher wakes at once, one in the middle of a
 * poll aborts it within about a second (cx_http's abort callback) and at worst timeout_ms. */
void cx_fga_free(cx_fga_t *fga);

/* Counters of the answer cache, for tests and benchmarks. hits + misses counts every
 * cx_fga_check that reached the policy decision (a miss is a live call, including every check
 * made while the cache is off or unfresh); flushes counts every time the whole cache was
 * forgotten (own writes count twice, polls that saw changes, failed polls, returns to
 * freshness); polls and poll_failures count the watcher's polls; fresh: answers may be served
 * now. */
typedef struct cx_fga_cache_stats {
    uint64_t hits, misses, flushes, polls, poll_failures;
    size_t entries; /* entries held, flushed ones not yet reclaimed included */
    bool enabled, fresh;
} cx_fga_cache_stats_t;

/* Any thread; never blocks on I/O. All zero for NULL. */
void cx_fga_cache_stats(cx_fga_t *fga, cx_fga_cache_stats_t *out);

typedef struct cx_fga_tuple {
    char user[CX_FGA_NAME_MAX];
    char relation[64];
    char object[CX_FGA_NAME_MAX];
} cx_fga_tuple_t;

/* Fill a tuple; false (and nothing usable) when a part is too long or empty. */
bool cx_fga_tuple_set(cx_fga_tuple_t *t, const char *user, const char *relation,
                      const char *object);

/* Does `user` have `relation` on `object`? *allowed is written only on success. */
bool cx_fga_check(cx_fga_t *fga, const char *user, const char *relation, const char *object,
                  bool *allowed, cx_error_t *err);

/* Add and remove tuples in one request. Adding an existing tuple or removing a missing one is
 * not an error (callers replay writes to complete an interrupted operation). At most 100
 * tuples in all (OpenFGA's limit per write). */
bool cx_fga_write(cx_fga_t *fga, const cx_fga_tuple_t *adds, size_t nadds,
                  const cx_fga_tuple_t *deletes, size_t ndeletes, cx_error_t *err);

/* Every tuple whose object is `object` (optionally filtered by relation and user, NULL = any),
 * following continuation tokens up to max tuples. *out is malloc'd (free with free()); on
 * failure *out and *n are untouched. More than max tuples is CX_ERR_RESOURCE_EXHAUSTED. */
bool cx_fga_read(cx_fga_t *fga, const char *object, const char *relation, const char *user,
                 size_t max, cx_fga_tuple_t **out, size_t *n, cx_error_t *err);

/* One page of tuples for cx_fga_read_each (valid during the call only); false (with err set)
 * stops the read and fails it with err. */
typedef bool (*cx_fga_page_fn)(void *ctx, const cx_fga_tuple_t *tuples, size_t n, cx_error_t *err);

/* Every tuple of the store (object NULL) or of `object` ("type:id", or "type:" for every object
 * of a type), page by page (at most 100 tuples a page) in OpenFGA's order, following
 * continuation tokens: memory stays one page whatever the store holds. Blocking: one request
 * per page, each bounded by timeout_ms. Tuples with a condition are read without it (credex's
 * model has none). */
bool cx_fga_read_each(cx_fga_t *fga, const char *object, cx_fga_page_fn page, void *ctx,
                      cx_error_t *err);

/* Objects of `type` on which `user` has `relation`, as ids without the "type:" prefix
 * (OpenFGA returns at most 1000). *ids is a malloc'd array of malloc'd strings: free with
 * cx_fga_strv_free. On failure *ids and *n are untouched. */
bool cx_fga_list_objects(cx_fga_t *fga, const char *user, const char *relation, const char *type,
                         char ***ids, size_t *n, cx_error_t *err);
void cx_fga_strv_free(char **v, size_t n); /* NULL-safe */

/* Is the OpenFGA server answering (GET /healthz)? CX_ERR_UNAVAILABLE with a reason if not. */
bool cx_fga_ping(cx_fga_t *fga, cx_error_t *err);

/* The decoders of OpenFGA's answers, exposed for tests and fuzzing (fuzz/fuzz_fga.c): `body` is
 * a response body as received. Anything but the documented shape is CX_ERR_UNAVAILABLE (an
 * answer that cannot be read is no answer: callers fail closed). */
typedef enum cx_fga_answer {
    CX_FGA_ANSWER_CHECK,        /* {"allowed": bool} */
    CX_FGA_ANSWER_READ,         /* {"tuples": [{"key": {...}}], "continuation_token": ""} */
    CX_FGA_ANSWER_LIST_OBJECTS, /* {"objects": ["type:id", ...]} */
    CX_FGA_ANSWER_CHANGES,      /* {"changes": [...], "continuation_token": ""} */
} cx_fga_answer_t;
bool cx_fga_decode_answer(cx_fga_answer_t kind, const char *body, size_t len, cx_error_t *err);

#endif
