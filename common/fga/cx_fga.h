/*
 * cx_fga: a client of the OpenFGA HTTP API (Check, Write, Read, ListObjects), the policy
 * service of docs/IDENTITY.md. OpenFGA is the only source of truth for who may do what, so
 * every failure to get an answer is fail-closed: transport errors, timeouts and HTTP 5xx are
 * CX_ERR_UNAVAILABLE, and a Check that did not answer `allowed: true` is never "allowed".
 *
 * Objects and users are OpenFGA strings "type:id" or "type:id#relation" (e.g. "user:alice",
 * "team:eng#member", "secret_ref:sec_123"). Each is at most CX_FGA_NAME_MAX bytes.
 *
 * Thread-safety: a cx_fga_t is immutable after creation; every call uses its own CURL handle,
 * so calls may run concurrently from any thread. Every call blocks for at most timeout_ms.
 * Library code: nothing is logged here.
 */
#ifndef CREDEX_COMMON_FGA_CX_FGA_H
#define CREDEX_COMMON_FGA_CX_FGA_H

#include <stdbool.h>
#include <stddef.h>

#include "common/error/cx_error.h"

#define CX_FGA_NAME_MAX     256
#define CX_FGA_RESPONSE_MAX (4 * 1024 * 1024)

typedef struct cx_fga cx_fga_t;

typedef struct cx_fga_options {
    const char *url;      /* "http://127.0.0.1:8081" (no trailing slash needed) */
    const char *store_id; /* required */
    const char *model_id; /* "" or NULL = the store's latest model */
    unsigned timeout_ms;  /* whole-call timeout, >= 1 */
} cx_fga_options_t;

/* Strings are copied. CX_ERR_INVALID_ARGUMENT when url or store_id is missing. */
cx_fga_t *cx_fga_new(const cx_fga_options_t *opts, cx_error_t *err);
void cx_fga_free(cx_fga_t *fga); /* NULL-safe */

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

/* Objects of `type` on which `user` has `relation`, as ids without the "type:" prefix
 * (OpenFGA returns at most 1000). *ids is a malloc'd array of malloc'd strings: free with
 * cx_fga_strv_free. On failure *ids and *n are untouched. */
bool cx_fga_list_objects(cx_fga_t *fga, const char *user, const char *relation, const char *type,
                         char ***ids, size_t *n, cx_error_t *err);
void cx_fga_strv_free(char **v, size_t n); /* NULL-safe */

/* Is the OpenFGA server answering (GET /healthz)? CX_ERR_UNAVAILABLE with a reason if not. */
bool cx_fga_ping(cx_fga_t *fga, cx_error_t *err);

#endif
