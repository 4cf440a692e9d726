/*
 * mdb: credex's thin layer over mongo-c-driver (libmongoc 1.23). Services reach MongoDB only
 * through it (docs/DESIGN.md).
 *
 * What it fixes once, so that no service gets it wrong:
 *  - one client pool per process, built from the config snapshot (CREDEX_MONGO_URI, _DB);
 *  - CREDEX_MONGO_TIMEOUT_MS as connectTimeoutMS, serverSelectionTimeoutMS, socketTimeoutMS
 *    and waitQueueTimeoutMS, so that a database outage (or an exhausted pool) answers
 *    CX_ERR_UNAVAILABLE within a bounded time and never hangs a call;
 *  - write concern "majority" by default (CREDEX_MONGO_WRITE_CONCERN=1 allowed), applied to
 *    every collection handle returned by mdb_collection and every write helper;
 *  - the mapping of driver and server errors to cx codes (mdb_error_map), in this one place:
 *    network, server selection and timeouts -> unavailable, duplicate key (11000) ->
 *    conflict, anything else -> internal;
 *  - the operations services need (find one, insert, update with matched count, update
 *    returning the new document, delete, one page of a sorted query, every match of a bounded
 *    query, a count), each mapping its errors
 *    and keeping the down state below;
 *  - the indexes of the collections of docs/DATA_MODEL.md (exactly) with
 * mdb_init_indexes;
 *  - mdb_lease.h: a lease with a fencing token, built on unique-index inserts;
 *  - mdb_cache.h: a read-through cache of one collection's documents by _id, kept coherent by
 *    a watcher thread within a stated bound.
 *
 * Down state. Pooled mongo-c clients retry server selection until serverSelectionTimeoutMS,
 * so without help every call would wait the full timeout while the database refuses
 * connections. mdb keeps a state, up or down:
 *  - down when an operation fails with a network or server-selection error (a hung database
 *    is thus detected by the operations' own timeout), or when the prober's ping fails;
 *  - up again as soon as a ping succeeds that started after the last failure.
 * The prober is one thread per mdb_t with its own single-threaded client (one selection
 * attempt, no pool), pinging every MDB_PROBE_INTERVAL_MS, up or down: a ping on an open
 * connection is one round trip, and pinging while up lets a refused database be noticed
 * before any call pays the selection timeout. Its timeouts are the operations' own, so a
 * database slow under load is never declared down sooner than the operations would find it.
 * While down, mdb_client_pop and every operation fail at once with CX_ERR_UNAVAILABLE and a
 * message "database is down: <why>" (a driver message: hosts and errors, never values). A call
 * already waiting in the driver when the state turns down still waits out its own timeout.
 * The pool's own monitor looks at the server every 500 ms (the driver's minimum), so that
 * once the prober lifts the state, the pool finds the server without a further wait of its
 * own beyond that: service resumes within about half a second of the database listening.
 *
 * Library code: it never logs except mdb_init_indexes' degradation warning, which the brief
 * requires to be visible both to the operator (report line) and in the logs.
 *
 * Blocking: every function that talks to the server blocks, at most for the timeouts above
 * (an operation: one selection plus one socket wait; while down: not at all).
 *
 * Thread-safety: mdb_t is thread-safe (the pool and the state are); a popped mongoc_client_t
 * belongs to one thread until pushed back, and the operations below use it from that thread.
 */
#ifndef CREDEX_COMMON_MDB_MDB_H
#define CREDEX_COMMON_MDB_MDB_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

typedef struct mdb mdb_t;

/* The collections of docs/DATA_MODEL.md. */
#define MDB_COLL_SECRET_REFS        "credential_secret_refs"
#define MDB_COLL_PAYLOADS           "credential_encrypted_payloads"
#define MDB_COLL_OAUTH_CONNECTORS   "oauth_connectors"
#define MDB_COLL_CONNECTIONS        "provider_connections"
#define MDB_COLL_OAUTH_FLOWS        "oauth_flows"
#define MDB_COLL_AUDIT_EVENTS       "credential_audit_events"
#define MDB_COLL_MIGRATION_PREVIEWS "credential_migration_previews"
#define MDB_COLL_LEASES             "credex_leases" /* mdb_lease.h */

typedef struct mdb_options {
    const char *uri;      /* mongodb://... (may hold a password: never echoed) */
    const char *db;       /* database name */
    unsigned timeout_ms;  /* connect, server selection, socket and pool wait timeout */
    bool write_majority;  /* true: w=majority, false: w=1 */
    unsigned pool_max;    /* max clients in the pool, >= 1 */
    const char *app_name; /* shown in server logs; may be NULL */
} mdb_options_t;

/* Ping period of the prober (see "Down state"). */
#define MDB_PROBE_INTERVAL_MS 250

/* Calls mongoc_init once per process (thread-safe). mdb_open calls it itself. */
void mdb_global_init(void);

/* Build the pool and start the prober thread (which connects in the background; the pool
 * connects lazily). The state starts up. Fails with INVALID_ARGUMENT for a bad URI (message
 * never contains it), INTERNAL when the thread cannot start. Does not block on the server. */
bool mdb_open(mdb_t **out, const mdb_options_t *opts, cx_error_t *err);
/* NULL-safe. All popped clients must have been pushed back. Stops the prober, waiting at most
 * for the ping it may be in (bounded by timeout_ms). */
void mdb_close(mdb_t *m);

const char *mdb_db_name(const mdb_t *m);
unsigned mdb_timeout_ms(const mdb_t *m);

/* True unless the database is known to be down (see "Down state"). Lock-free; the answer may
 * change the moment after. */
bool mdb_is_up(mdb_t *m);

/* Take a client from the pool; waits at most timeout_ms (UNAVAILABLE when the pool stays
 * exhausted), and not at all while the database is down (UNAVAILABLE, "database is down: ...").
 * Give it back with mdb_client_push. */
mongoc_client_t *mdb_client_pop(mdb_t *m, cx_error_t *err);
void mdb_client_push(mdb_t *m, mongoc_client_t *c); /* NULL-safe */

/* A collection handle of the configured database with the configured write concern. Free with
 * mongoc_collection_destroy. Never NULL. */
mongoc_collection_t *mdb_collection(mdb_t *m, mongoc_client_t *c, const char *name);

/* Cheap round trip ({ping: 1}) through the pool; UNAVAILABLE when the server cannot be reached
 * in time, or at once while the database is down. */
bool mdb_ping(mdb_t *m, cx_error_t *err);

/* ---- operations ------------------------------------------------------------------------
 * Common to all: c is a client popped from m by the calling thread; coll a collection name of
 * the configured database. They fail at once with UNAVAILABLE while the database is down;
 * otherwise a failure sets err with mdb_error_map's code (unavailable, conflict for a
 * duplicate key, internal) and, for a network or server-selection error, marks the database
 * down. Out-params are untouched on failure (but mdb_insert_many's *refused, which is set only
 * then). Blocking (see above). */

/* The first document matching filter, copied into *out (caller destroys it) with *found true;
 * *found false (and *out untouched) when none matches. */
bool mdb_find_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter, bson_t *out,
                  bool *found, cx_error_t *err);

/* Insert one document (the write concern of mdb applies). */
bool mdb_insert_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *doc,
                    cx_error_t *err);

/* An ordered insert of docs[0..n). On failure *refused says what is known: an index k < n
 * means docs[0..k) were written, docs[k] was refused on its own (err: its code) and docs after
 * it were not tried; n means the driver refused the batch before sending anything (which
 * document is unknown, none is written); MDB_INSERT_UNKNOWN means the batch failed as a whole
 * (the database is down, or the outcome is unknown: network, timeout, write concern). */
#define MDB_INSERT_UNKNOWN SIZE_MAX
bool mdb_insert_many(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *const *docs,
                     size_t n, size_t *refused, cx_error_t *err);

/* Update the first document matching sel with upd (an update document: {$set: ...}).
 * *matched (may be NULL) tells whether sel matched a document. */
bool mdb_update_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *sel,
                    const bson_t *upd, bool *matched, cx_error_t *err);

/* mdb_update_one that also answers the document as it is after the update (findAndModify,
 * new: true), copied into *after (caller destroys it) with *matched true; *matched false (and
 * *after untouched) when sel matched nothing. */
bool mdb_update_one_returning(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *sel,
                              const bson_t *upd, bson_t *after, bool *matched, cx_error_t *err);

/* Delete the first document, or every document, matching filter (none matching is success). */
bool mdb_delete_one(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                    cx_error_t *err);
bool mdb_delete_many(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                     cx_error_t *err);
/* mdb_delete_one telling whether a document was deleted: of concurrent deletes of one _id
 * exactly one sees *deleted true (a single-use claim, on FerretDB as on MongoDB). */
bool mdb_delete_one_counted(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                            bool *deleted, cx_error_t *err);

/* One row of a page: false (with err set) stops the query and fails it with err. doc is valid
 * only during the call. */
typedef bool (*mdb_row_fn)(void *ctx, const bson_t *doc, cx_error_t *err);

/* One page of a query, newest first: the documents matching filter, sorted descending by
 * (sortkey, idkey), at most limit of them handed to row in order; *more tells whether another
 * document follows the page (the query asks for limit + 1). Keyset paging is the caller's: it
 * narrows filter to the rows after the last one it saw. limit >= 1. */
bool mdb_find_page(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                   const char *sortkey, const char *idkey, unsigned limit, mdb_row_fn row,
                   void *ctx, bool *more, cx_error_t *err);

/* The first documents matching filter in ascending order of sortkey (a unique field, e.g. _id:
 * keyset paging narrows filter to sortkey > the last one seen), at most limit of them handed to
 * row in order; *more tells whether another document follows. limit >= 1. */
bool mdb_find_first(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                    const char *sortkey, unsigned limit, mdb_row_fn row, void *ctx, bool *more,
                    cx_error_t *err);

/* How many documents match filter (countDocuments), into *count. */
bool mdb_count(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
               uint64_t *count, cx_error_t *err);

/* Every document matching filter, in the server's order, handed to row (which may stop the
 * query as above). No limit: for filters that bound the result themselves (a list of ids). */
bool mdb_find_each(mdb_t *m, mongoc_client_t *c, const char *coll, const bson_t *filter,
                   mdb_row_fn row, void *ctx, cx_error_t *err);

/* The cx code for a driver/server error (see header comment). reply (may be NULL) is the
 * server's reply document when there is one; it is consulted for write errors. Pure. */
cx_code_t mdb_error_code(const bson_error_t *berr, const bson_t *reply);

/* Does this driver error say the database could not be reached (network, server selection)?
 * Such errors mark the state down. Pure. */
bool mdb_error_is_outage(const bson_error_t *berr);

/* Fill err from a driver error: code from mdb_error_code, message "<what>: <driver message>"
 * (driver messages name servers and fields, never document values). Returns false. Pure: it
 * does not touch the down state (the operations above do). */
bool mdb_error_map(const bson_error_t *berr, const bson_t *reply, const char *what,
                   cx_error_t *err);

/* A report line from mdb_init_indexes ("index <collection> <name>: ok" or
 * "degraded: <collection>.<name>: <reason>"). */
typedef void (*mdb_report_fn)(void *ctx, const char *line);

/* Create the indexes of docs/DATA_MODEL.md on its collections (creating the collections as a
 * side effect). Idempotent: existing identical indexes are left alone. When the server refuses (or
 * silently drops) partialFilterExpression, as FerretDB 1.24 does, the index is created without
 * the filter only where that cannot break correctness, else skipped; either way a
 * "degraded: ..." line is reported and a warning logged. *ndegraded (may be NULL) counts them.
 * Blocking. */
bool mdb_init_indexes(mdb_t *m, mdb_report_fn report, void *ctx, unsigned *ndegraded,
                      cx_error_t *err);

/* Milliseconds since the Unix epoch (wall clock), as stored in BSON dates. */
int64_t mdb_now_ms(void);

#endif
