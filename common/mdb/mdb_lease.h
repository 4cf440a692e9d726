/*
 * mdb_lease: a named lease with a fencing token, shared by every process on one database (the
 * refresh of one provider connection by exactly one oauth replica, for instance).
 *
 * Why unique-index inserts and not conditional updates: FerretDB does not make a filtered
 * updateOne/findAndModify atomic (concurrent updates filtered on one version all match), while
 * an insert into a unique index, _id included, is atomic on FerretDB as on MongoDB. So a lease
 * is a series of documents in MDB_COLL_LEASES, one per epoch of a key:
 *   { _id: "<key>/<epoch, 20 digits>", key, epoch, holder, expires_at }
 * and acquiring is inserting the next epoch's document. Of all the processes that read epoch e
 * as the newest and expired, exactly one inserts e + 1; the others get a duplicate key.
 *
 * The fencing token is the epoch: it only grows, because the newest document of a key is never
 * deleted (release marks it expired; the sweep deletes only epochs older than the newest).
 * One acquirer could still stall between its read of epoch e and its insert of e + 1 while
 * others took e + 1 and e + 2 and swept e + 1; its insert of e + 1 would then succeed. So after
 * inserting, acquire reads the newest epoch again and answers "acquired" only when it is its
 * own (its stray document is below the newest, never read, swept later).
 *
 * A lease does not protect a write by itself: a holder that stalls past its expiry (a paused
 * process, a long GC, a slow network) still believes it holds the lease, and mdb_lease_check
 * only narrows that window. The guarded write must carry the token and be refused by the
 * database when a newer one exists: a store expected_version derived from the token, or a
 * unique-index insert of a document keyed by the token. Comparing in a conditional update is
 * not enough on FerretDB (see above).
 *
 * Time: expires_at is the acquirer's wall clock plus ttl_ms; every process compares it with its
 * own wall clock, so clocks skewed by more than a small fraction of ttl_ms shorten or stretch
 * leases. Fencing (the token) does not depend on clocks.
 *
 * Limits: key at most MDB_LEASE_KEY_MAX bytes, holder at most MDB_LEASE_HOLDER_MAX, neither
 * empty; ttl_ms in [1, MDB_LEASE_TTL_MAX_MS]. INVALID_ARGUMENT otherwise (values never echoed).
 *
 * Blocking: each call pops a client from m's pool and makes a few round trips (acquire: read,
 * insert, read, sweep), each bounded by mdb's timeouts; while the database is down every call
 * fails at once. Errors: UNAVAILABLE on an outage, INTERNAL otherwise; a failed call never
 * grants a lease (fail closed). Thread-safety: every function is safe from any thread; the
 * state is the database's. Library code: never logs.
 */
#ifndef CREDEX_COMMON_MDB_MDB_LEASE_H
#define CREDEX_COMMON_MDB_MDB_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/error/cx_error.h"
#include "common/mdb/mdb.h"

#define MDB_LEASE_KEY_MAX    200
#define MDB_LEASE_HOLDER_MAX 128
#define MDB_LEASE_TTL_MAX_MS (24u * 3600u * 1000u)

typedef struct mdb_lease_grant {
    bool acquired;
    /* acquired: the fencing token of this grant. Otherwise the current holder's token (0 when
     * unknown). */
    uint64_t token;
    /* acquired: when this grant expires; otherwise when the current holder's does (ms since the
     * Unix epoch, wall clock), so that a caller knows how long to wait. */
    int64_t expires_at_ms;
} mdb_lease_grant_t;

/* Try to take key for holder for ttl_ms. Not acquired when the newest epoch is unexpired and
 * held by another holder, or when another process won the next epoch at the same moment.
 * The same holder asking again while it holds the lease gets a new, larger token (a renewal).
 * *out is set on success only; false (err set) means not acquired. */
bool mdb_lease_acquire(mdb_t *m, const char *key, const char *holder, unsigned ttl_ms,
                       mdb_lease_grant_t *out, cx_error_t *err);

/* Give the lease of token back early: its document is marked expired, so that the next
 * acquirer gets in at once (the document stays, keeping the epoch). Releasing a token that is
 * no longer the newest, or unknown, changes nothing and succeeds. */
bool mdb_lease_release(mdb_t *m, const char *key, uint64_t token, cx_error_t *err);

/* *valid: token is the newest epoch of key and unexpired now. A holder's last look before a
 * guarded write (see the header comment for what actually protects that write). */
bool mdb_lease_check(mdb_t *m, const char *key, uint64_t token, bool *valid, cx_error_t *err);

#endif
