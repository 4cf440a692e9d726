/*
 * mdb_cache: a bounded read-through cache of one collection's documents by _id, kept coherent
 * with the database by a watcher thread, for read paths that must leave the database but may
 * never answer from a document older than a stated bound (docs/DOCUMENT_CACHE.md).
 *
 * The contract, for a cache with bound B and poll period P (P < B):
 *  - a write made through this process takes effect at once for every lookup that starts
 *    after the writer called mdb_cache_evict for the id (writers evict before and after every
 *    write, whether it succeeded or not);
 *  - any other write (another replica, a direct write in the database, a delete) takes effect
 *    for every lookup that starts B after the write was committed;
 *  - when the watcher cannot read the database, the cache stops answering (every lookup misses
 *    and reads the database, which fails as the database fails) at the latest B after its last
 *    successful read, and at once when a read fails or mdb knows the database is down. It
 *    answers again only after a round of the watcher succeeded.
 *
 * How. An entry is the raw BSON of a document with its confirmation time: the start of the
 * last database read that saw these very bytes (the fill, or a watcher round). A lookup
 * answers only from an entry confirmed less than B ago. Every P the watcher re-reads the ids
 * of the entries that answered a lookup since their last confirmation, compares the bytes
 * read with the cached ones, and confirms (same bytes), evicts (other bytes) or evicts as gone
 * (no document). Entries that answered nothing are not re-read: they expire after B and are
 * reclaimed (a key used once costs its one read; one used a hundred times a second costs one
 * read per P). Where every id costs a query of its own (see below), an entry in use is re-read
 * only when it would otherwise expire before the next round (mdb_cache.c, mc_collect).
 * A fill carries the generation of the id's bucket and the cache's epoch from the moment its
 * lookup missed; an eviction bumps the bucket's generation and a failed round the epoch, so
 * that a fill that read the database before an eviction can never insert what it read after.
 *
 * Why polling and not change streams: FerretDB (the local database) has none, and a change
 * stream on MongoDB needs a replica set and a resume token kept across failures; the poll
 * works on both, sees direct writes as well as any writer's, and its cost is bounded by the
 * lookups it serves. Reading the watched ids takes one {_id: {$in: [...]}} query per
 * MDB_CACHE_BATCH ids, or one {_id: id} query per id where the server would scan the whole
 * collection for $in (FerretDB's SQLite backend says so in its explain output, filterPushdown
 * false): see mdb_cache_read_t.
 *
 * Library code: never logs. on_state tells the owner when the cache stops and starts
 * answering, so that the service can log it.
 *
 * Thread-safety: every function may be called from any thread but mdb_cache_free; lookups and
 * evictions hold one mutex for a hash-chain walk (at most MDB_CACHE_CHAIN_MAX entries) and, on
 * a hit, a copy of one document; never across I/O.
 */
#ifndef CREDEX_COMMON_MDB_MDB_CACHE_H
#define CREDEX_COMMON_MDB_MDB_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"
#include "common/mdb/mdb.h"

typedef struct mdb_cache mdb_cache_t;

#define MDB_CACHE_ID_MAX      128     /* bytes of an id that can be cached (longer: never) */
#define MDB_CACHE_DOC_MAX     16384   /* bytes of a document that can be cached (larger: never) */
#define MDB_CACHE_ENTRIES_MAX 1000000 /* max_entries at most */
#define MDB_CACHE_CHAIN_MAX   8       /* entries per hash bucket at most */
#define MDB_CACHE_BATCH       128     /* ids per $in query of the watcher */

/* How the watcher reads the ids it re-checks. */
typedef enum mdb_cache_read {
    MDB_CACHE_READ_AUTO = 0, /* ask the server (explain) before the first read, and again after a
                                failed round: EACH when it reports filterPushdown false for an
                                _id $in (FerretDB), else IN */
    MDB_CACHE_READ_IN,       /* {_id: {$in: [...]}}, MDB_CACHE_BATCH ids per query */
    MDB_CACHE_READ_EACH,     /* {_id: id}, one query per id */
} mdb_cache_read_t;

/* The cache started (enabled true) or stopped (false) answering; why is the failure that
 * stopped it (NULL when enabled). Called on the watcher thread, without any lock held of the
 * cache; it must not call mdb_cache_free. */
typedef void (*mdb_cache_state_fn)(void *ctx, bool enabled, const cx_error_t *why);

typedef struct mdb_cache_options {
    const char *coll;     /* collection of the configured database (copied) */
    unsigned max_entries; /* 1..MDB_CACHE_ENTRIES_MAX */
    unsigned bound_ms;    /* B: > poll_ms */
    unsigned poll_ms;     /* P: >= 1 */
    mdb_cache_read_t read;
    mdb_cache_state_fn on_state; /* may be NULL */
    void *state_ctx;
} mdb_cache_options_t;

/* Build the cache and start its watcher (the first round runs at once). INVALID_ARGUMENT for
 * options out of range, INTERNAL when memory or the thread is lacking. db must outlive the
 * cache. Does not block on the server. */
bool mdb_cache_new(mdb_cache_t **out, mdb_t *db, const mdb_cache_options_t *opts, cx_error_t *err);
/* NULL-safe. Stops the watcher (waiting at most for the read it may be in, bounded by mdb's
 * timeouts) and frees every entry. No other call may be in progress. */
void mdb_cache_free(mdb_cache_t *c);

/* What a miss hands to the fill that follows it (mdb_cache_put). Plain data. */
typedef struct mdb_cache_ticket {
    uint64_t epoch, gen;
    int64_t started_ns; /* CLOCK_MONOTONIC: the fill's read starts after it */
} mdb_cache_ticket_t;

/* A lookup that does not read: true with *out a copy of the cached document (caller destroys
 * it) when a confirmed entry holds id; false (and *out untouched) otherwise. *ticket is always
 * set, for mdb_cache_put. Never blocks on the server. */
bool mdb_cache_get(mdb_cache_t *c, const char *id, bson_t *out, mdb_cache_ticket_t *ticket);

/* Offer doc, read from the database after mdb_cache_get gave ticket for id. Stored (true)
 * unless the id's bucket was evicted or the cache failed since the ticket, the cache is not
 * answering, the id or document is too large, or there is no room (a full cache or chain
 * refuses new entries until expired ones are reclaimed). Never blocks on the server. */
bool mdb_cache_put(mdb_cache_t *c, const char *id, const bson_t *doc,
                   const mdb_cache_ticket_t *ticket);

/* Read-through: the document of _id id (a string) from the cache, else read with
 * mdb_find_one on client (popped from the cache's mdb by the calling thread) and offered to
 * the cache. *found false when the database has none (absence is never cached); *hit (may be
 * NULL) tells whether the cache answered. Out-params untouched on failure; errors are
 * mdb_find_one's. Blocking on a miss. */
bool mdb_cache_find(mdb_cache_t *c, mongoc_client_t *client, const char *id, bson_t *out,
                    bool *found, bool *hit, cx_error_t *err);

/* Forget id: its entry, and any fill of its bucket that started before this call. NULL-safe
 * (c NULL or id NULL: nothing). Writers call it before and after every write of the id. */
void mdb_cache_evict(mdb_cache_t *c, const char *id);

typedef struct mdb_cache_stats {
    uint64_t hits, misses;
    uint64_t fills;     /* entries stored by mdb_cache_put */
    uint64_t stale;     /* fills refused because an eviction or failure came after their miss */
    uint64_t full;      /* fills refused for lack of room */
    uint64_t evictions; /* entries removed by mdb_cache_evict or by the watcher (changed, gone) */
    uint64_t expired;   /* entries reclaimed after the bound, unconfirmed */
    uint64_t rounds, failed_rounds;
    uint64_t reads;   /* documents the watcher asked the database for */
    uint64_t queries; /* database queries the watcher made for them */
    size_t entries;
    bool enabled;          /* answering now */
    mdb_cache_read_t mode; /* AUTO until the server was asked */
} mdb_cache_stats_t;

/* A snapshot of the counters. NULL-safe (all zero). */
void mdb_cache_stats(mdb_cache_t *c, mdb_cache_stats_t *out);

#endif
