/*
 * mdb: credex's thin layer over mongo-c-driver (libmongoc 1.23).
 *
 * What it fixes once, so that no service gets it wrong:
 *  - one client pool per process, built from the config snapshot (CREDEX_MONGO_URI, _DB);
 *  - CREDEX_MONGO_TIMEOUT_MS as connectTimeoutMS, serverSelectionTimeoutMS, socketTimeoutMS
 *    and waitQueueTimeoutMS, so that a database outage (or an exhausted pool) answers
 *    CX_ERR_UNAVAILABLE within a bounded time and never hangs a call;
 *  - write concern "majority" by default (CREDEX_MONGO_WRITE_CONCERN=1 allowed), applied to
 *    every collection handle returned by mdb_collection;
 *  - the mapping of driver and server errors to cx codes (mdb_error_map), in this one place:
 *    network, server selection and timeouts -> unavailable, duplicate key (11000) ->
 *    conflict, anything else -> internal;
 *  - the indexes of the six credential collections (seed 003, exactly) with mdb_init_indexes.
 *
 * Library code: it never logs except mdb_init_indexes' degradation warning, which the brief
 * requires to be visible both to the operator (report line) and in the logs.
 *
 * Thread-safety: mdb_t is thread-safe (the pool is); a popped mongoc_client_t belongs to one
 * thread until pushed back.
 */
#ifndef CREDEX_COMMON_MDB_MDB_H
#define CREDEX_COMMON_MDB_MDB_H

#include <mongoc/mongoc.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error/cx_error.h"

typedef struct mdb mdb_t;

/* The six collections of seed 003. */
#define MDB_COLL_SECRET_REFS        "credential_secret_refs"
#define MDB_COLL_PAYLOADS           "credential_encrypted_payloads"
#define MDB_COLL_OAUTH_CONNECTORS   "oauth_connectors"
#define MDB_COLL_CONNECTIONS        "provider_connections"
#define MDB_COLL_AUDIT_EVENTS       "credential_audit_events"
#define MDB_COLL_MIGRATION_PREVIEWS "credential_migration_previews"

typedef struct mdb_options {
    const char *uri;      /* mongodb://... (may hold a password: never echoed) */
    const char *db;       /* database name */
    unsigned timeout_ms;  /* connect, server selection, socket and pool wait timeout */
    bool write_majority;  /* true: w=majority, false: w=1 */
    unsigned pool_max;    /* max clients in the pool, >= 1 */
    const char *app_name; /* shown in server logs; may be NULL */
} mdb_options_t;

/* Calls mongoc_init once per process (thread-safe). mdb_open calls it itself. */
void mdb_global_init(void);

/* Build the pool. Does not contact the server (the driver connects lazily); use mdb_ping to
 * check reachability. Fails with INVALID_ARGUMENT for a bad URI (message never contains it). */
bool mdb_open(mdb_t **out, const mdb_options_t *opts, cx_error_t *err);
/* NULL-safe. All popped clients must have been pushed back. */
void mdb_close(mdb_t *m);

const char *mdb_db_name(const mdb_t *m);
unsigned mdb_timeout_ms(const mdb_t *m);

/* Take a client from the pool; waits at most timeout_ms (UNAVAILABLE when the pool stays
 * exhausted). Give it back with mdb_client_push. */
mongoc_client_t *mdb_client_pop(mdb_t *m, cx_error_t *err);
void mdb_client_push(mdb_t *m, mongoc_client_t *c); /* NULL-safe */

/* A collection handle of the configured database with the configured write concern. Free with
 * mongoc_collection_destroy. Never NULL. */
mongoc_collection_t *mdb_collection(mdb_t *m, mongoc_client_t *c, const char *name);

/* Cheap round trip ({ping: 1}); UNAVAILABLE when the server cannot be reached in time. */
bool mdb_ping(mdb_t *m, cx_error_t *err);

/* The cx code for a driver/server error (see header comment). reply (may be NULL) is the
 * server's reply document when there is one; it is consulted for write errors. */
cx_code_t mdb_error_code(const bson_error_t *berr, const bson_t *reply);

/* Fill err from a driver error: code from mdb_error_code, message "<what>: <driver message>"
 * (driver messages name servers and fields, never document values). Returns false. */
bool mdb_error_map(const bson_error_t *berr, const bson_t *reply, const char *what,
                   cx_error_t *err);

/* A report line from mdb_init_indexes ("index <collection> <name>: ok" or
 * "degraded: <collection>.<name>: <reason>"). */
typedef void (*mdb_report_fn)(void *ctx, const char *line);

/* Create the indexes of seed 003 on the six collections (creating the collections as a side
 * effect). Idempotent: existing identical indexes are left alone. When the server refuses (or
 * silently drops) partialFilterExpression, as FerretDB 1.24 does, the index is created without
 * the filter only where that cannot break correctness, else skipped; either way a
 * "degraded: ..." line is reported and a warning logged. *ndegraded (may be NULL) counts them.
 * Blocking. */
bool mdb_init_indexes(mdb_t *m, mdb_report_fn report, void *ctx, unsigned *ndegraded,
                      cx_error_t *err);

/* Milliseconds since the Unix epoch (wall clock), as stored in BSON dates. */
int64_t mdb_now_ms(void);

#endif
