/*
 * store internals shared by the store's modules and its unit tests (not a public API: other
 * services meet store only through proto/). Modules, in the order a call meets them:
 *   store.c       the process state (store_new) and registration
 *   dispatch.c    the method table, the call context every handler gets, and the one rule of
 *                 failure audit: every failed call is audited there, nowhere else
 *   validate.c    request validation, the shapes of stored strings, the per-peer kind policy
 *   lifecycle.c   CreateSecret, GetSecret, UpdateSecret, RotateSecret, RevokeSecret,
 *                 DeleteSecret
 *   resolve.c     Resolve (the only decrypt)
 *   lists.c       ListSecrets, ListVersions, QueryAuditEvents and the paging they share
 *   events.c      audit events composed from a call (success and failure), AppendAuditEvent
 *   secret_doc.c  the codec of credential_secret_refs documents (outside input: the database)
 *   envelope.c    secret/payload ids, encryption context and AAD, AES-GCM seal/open, the codec
 *                 of credential_encrypted_payloads documents
 *   keys.c        data keys from keywrap (GenerateDataKey/Unwrap/Rewrap/Describe over mTLS)
 *   dek_cache.c   bounded cache of unwrapped data keys
 *   payload_cache.c bounded cache of decoded payload documents (never plaintext)
 *   audit.c       credential_audit_events documents, paging cursors
 *   audit_batch.c group commit of concurrent audit writes
 *   keycheck.c    CheckDataKeys: does keywrap's key material unwrap a backup's data keys
 *   rewrap.c      RewrapDataKeys: CMK rotation of the stored data keys (docs/KEY_ROTATION.md)
 */
#ifndef CREDEX_SERVICES_STORE_STORE_INTERNAL_H
#define CREDEX_SERVICES_STORE_STORE_INTERNAL_H

#include <bson/bson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/crypto/cx_crypto.h"
#include "common/error/cx_error.h"
#include "common/mdb/mdb.h"
#include "common/mdb/mdb_cache.h"
#include "common/rpc/rpc.h"
#include "credex/v1/store.pb-c.h"

#define STORE_ALG             "AES-256-GCM"
#define STORE_ID_LEN          30 /* "sec_" + 26 Crockford base32 chars */
#define STORE_ID_BUF          (STORE_ID_LEN + 1)
#define STORE_VALUE_MAX       65536u /* common.proto: secret value 1..65536 bytes */
#define STORE_WRAPPED_MAX     4096u  /* bytes of a wrapped data key we accept from storage */
#define STORE_OWNER_ID_MAX    128
#define STORE_KEY_ID_MAX      255
#define STORE_KEY_VERSION_MAX 64
#define STORE_CONTEXT_PAIRS   5 /* secret_id, version, owner_type, owner_id, kind */

/* ---- names stored in documents (lower-case words of the proto enums) -------------------- */
const char *store_owner_type_name(Credex__V1__OwnerType t); /* NULL when unspecified/bad */
const char *store_kind_name(Credex__V1__SecretKind k);
const char *store_status_name(Credex__V1__SecretStatus s);
const char *store_key_provider_name(Credex__V1__KeyProvider p);
Credex__V1__OwnerType store_owner_type_parse(const char *s);
Credex__V1__SecretKind store_kind_parse(const char *s);
Credex__V1__SecretStatus store_status_parse(const char *s);
Credex__V1__KeyProvider store_key_provider_parse(const char *s);

/* ---- ids -------------------------------------------------------------------------------- */

/* "sec_" + the first 130 bits of SHA-256(owner_type "|" owner_id "|" idempotency_key) in
 * Crockford base32 (26 chars). owner_id may not contain '|' (validation refuses it) so that
 * the concatenation is unambiguous. out has STORE_ID_BUF bytes. */
void store_secret_id_derive(const char *owner_type, const char *owner_id, const char *idem_key,
                            char out[STORE_ID_BUF]);
/* prefix (3 chars + "_") followed by 26 random Crockford base32 chars. */
bool store_random_id(const char *prefix, char out[STORE_ID_BUF], cx_error_t *err);
/* True for prefix followed by exactly 26 Crockford base32 (upper-case) chars. */
bool store_id_valid(const char *s, const char *prefix);

/* ---- envelope --------------------------------------------------------------------------- */

/* The fields bound to a payload: the key-wrap encryption context (first five) and, with
 * payload_id and alg, the AES-GCM associated data. Always taken from the secret's metadata
 * document, never from the payload document, so a payload moved to another secret fails. */
typedef struct store_bind {
    const char *secret_id;
    uint32_t version;
    const char *owner_type; /* stored name: "user", "team", "platform" */
    const char *owner_id;
    const char *kind; /* stored name: "api_key", ... */
    const char *payload_id;
} store_bind_t;

/* The five encryption-context pairs into pairs[]; verbuf holds the decimal version. */
void store_bind_context(const store_bind_t *b, char verbuf[12], cx_kv_t pairs[STORE_CONTEXT_PAIRS]);
/* cx_crypto_context_encode(context + payload_id + alg); *aad to free(). */
bool store_bind_aad(const store_bind_t *b, unsigned char **aad, size_t *aadlen, cx_error_t *err);

/* A stored payload document, decoded and checked. Byte pointers point into the document. */
typedef struct store_payload {
    const char *payload_id;
    const char *secret_id;
    uint32_t version;
    Credex__V1__KeyProvider key_provider;
    const char *key_id;
    const char *key_version;
    const uint8_t *wrapped;
    uint32_t wrapped_len;
    const uint8_t *nonce; /* CX_GCM_NONCE_LEN */
    const uint8_t *ct;
    uint32_t ct_len;
    const uint8_t *tag; /* CX_GCM_TAG_LEN */
    const char *created_by;
    int64_t created_at_ms;
} store_payload_t;

/* Decode a credential_encrypted_payloads document. Anything malformed (missing field, wrong
 * type, wrong length, unknown algorithm or provider) is CX_ERR_INTEGRITY: the database is
 * outside input and a damaged payload must never reach the cipher. */
bool store_payload_decode(const bson_t *doc, store_payload_t *out, cx_error_t *err);

/* The credential_encrypted_payloads document of p (_id = payload_id; alg AES-256-GCM). */
void store_payload_encode(const store_payload_t *p, bson_t *out);

/* The VersionInfo of a payload document, from p as written or as read back (strings copied
 * into the arena), so that every reply describing a version says what is stored. current: p
 * is the secret's current version. */
Credex__V1__VersionInfo *store_payload_version_info(rpc_arena_t *arena, const store_payload_t *p,
                                                    bool current);

/* Seal plain under dek with the AAD of b. ct has plen bytes. */
bool store_envelope_seal(const cx_secret_t *dek, const store_bind_t *b, const unsigned char *plain,
                         size_t plen, unsigned char nonce[CX_GCM_NONCE_LEN], unsigned char *ct,
                         unsigned char tag[CX_GCM_TAG_LEN], cx_error_t *err);
/* Open p under dek with the AAD of b; also checks p's own ids against b. INTEGRITY on any
 * mismatch. */
cx_secret_t *store_envelope_open(const cx_secret_t *dek, const store_bind_t *b,
                                 const store_payload_t *p, cx_error_t *err);
/* store_envelope_open into out (p->ct_len bytes of the caller's: the call arena, wiped with it),
 * with the AAD of b already encoded (aad: what store_bind_aad(b) gives; Resolve needs it for the
 * DEK cache key too). out holds the plaintext only on success; on failure it is wiped. */
bool store_envelope_open_to(const cx_secret_t *dek, const store_bind_t *b, const store_payload_t *p,
                            const unsigned char *aad, size_t aadlen, unsigned char *out,
                            cx_error_t *err);

/* Digest naming a cached data key: SHA-256 over payload_id, wrapped key and AAD, so that a
 * tampered wrapped key or context misses the cache and goes to keywrap (which refuses it). */
void store_dek_cache_key(const store_bind_t *b, const uint8_t *wrapped, size_t wrapped_len,
                         const unsigned char *aad, size_t aadlen, unsigned char out[32]);

/* ---- DEK cache -------------------------------------------------------------------------- */

typedef struct store_dek_cache store_dek_cache_t;
typedef struct store_dek_lease store_dek_lease_t;
/* ttl_ms == 0 or max_entries == 0 gives a disabled cache (get always misses). Thread-safe. */
store_dek_cache_t *store_dek_cache_new(unsigned ttl_ms, unsigned max_uses, unsigned max_entries);
/* NULL-safe; wipes every key. Every lease must have been returned. */
void store_dek_cache_free(store_dek_cache_t *c);
/* The cached key itself, counting one use, lent to the caller until it hands *lease back with
 * store_dek_cache_release: until then it stays valid (in the cache's locked memory) even if its
 * entry expires or is evicted meanwhile; it is wiped after the last return. NULL (and *lease
 * NULL) on a miss, an expired entry or one whose uses are exhausted (the entry is then
 * dropped). Never blocks beyond the cache's lock. */
const cx_secret_t *store_dek_cache_get(store_dek_cache_t *c, const unsigned char key[32],
                                       int64_t now_ms, store_dek_lease_t **lease);
void store_dek_cache_release(store_dek_cache_t *c, store_dek_lease_t *lease); /* NULL-safe */
/* Insert a copy of dek (evicting expired, then the oldest, entries when full). */
void store_dek_cache_put(store_dek_cache_t *c, const unsigned char key[32], const cx_secret_t *dek,
                         int64_t now_ms);
size_t store_dek_cache_size(store_dek_cache_t *c);

/* ---- payload cache ---------------------------------------------------------------------- */

/* Decoded payload documents by payload id: ciphertext, nonce, tag, wrapped key and key
 * provider/id/version, never plaintext or data keys. Only an envelope that opened is put; which
 * payload Resolve opens is decided by the metadata (st->meta's bound), and Resolve retries once
 * from the database when anything fails after a hit. Entries are cx_secret_t memory, wiped on
 * eviction and free.
 * Thread-safe; each call holds the lock for a hash lookup (and a copy of one entry). */
typedef struct store_payload_cache store_payload_cache_t;

/* Total bytes held at most (ciphertexts are up to 64 KiB, entries up to 1000000). */
#define STORE_PAYLOAD_CACHE_MAX_BYTES ((size_t)64 << 20)

typedef struct store_payload_cache_stats {
    uint64_t hits, misses, inserts, expired, evicted;
    size_t entries, bytes;
} store_payload_cache_stats_t;

/* ttl_ms == 0, max_entries == 0 or max_bytes == 0 gives a disabled cache (get always misses,
 * put does nothing). Age counts from insertion; the oldest entry goes first when full. */
store_payload_cache_t *store_payload_cache_new(unsigned ttl_ms, unsigned max_entries,
                                               size_t max_bytes);
void store_payload_cache_free(store_payload_cache_t *c); /* NULL-safe; wipes every entry */
/* On a hit, every pointer of *out points into a private copy of the entry in arena (the call's:
 * wiped with it; the entry holds no plaintext and no data key, so it needs no locked memory of
 * its own); created_by/created_at are not kept. False on a miss or an expired entry (then
 * removed); *out untouched. */
bool store_payload_cache_get(store_payload_cache_t *c, const char *payload_id, int64_t now_ms,
                             rpc_arena_t *arena, store_payload_t *out);
/* Insert a copy of p (replacing an entry of the same payload id), evicting expired, then the
 * oldest, entries while over a bound. */
void store_payload_cache_put(store_payload_cache_t *c, const store_payload_t *p, int64_t now_ms);
void store_payload_cache_evict(store_payload_cache_t *c, const char *payload_id);
/* Every entry of one secret (delete, revoke, rotate). */
void store_payload_cache_evict_secret(store_payload_cache_t *c, const char *secret_id);
void store_payload_cache_stats(store_payload_cache_t *c, store_payload_cache_stats_t *out);

/* ---- validation ------------------------------------------------------------------------- */

/* Shapes of strings, shared by request validation and the stored-document decoders. NULL is
 * the empty string. */
/* May this peer touch a secret of this kind and owner type (store.proto's policy)? */
bool store_peer_may_use(const char *peer, Credex__V1__SecretKind kind,
                        Credex__V1__OwnerType owner_type);
bool store_validate_owner(const Credex__V1__Owner *o, cx_error_t *err);
/* store's own id format: "sec_" and 26 Crockford base32 characters. */
bool store_validate_secret_id(const char *id, cx_error_t *err);
/* Store's policy on the rest of a request, once the dispatch has checked it against the
 * contract and validated its secret id; a NULL caller is refused, not read. */
bool store_validate_create(const Credex__V1__StoreCreateSecretRequest *r, const char *peer,
                           cx_error_t *err);
bool store_validate_update(const Credex__V1__StoreUpdateSecretRequest *r, cx_error_t *err);
bool store_validate_resolve(const Credex__V1__StoreResolveRequest *r, const char *peer,
                            cx_error_t *err);
bool store_validate_audit_event(const Credex__V1__AuditEvent *e, cx_error_t *err);
/* Clamped page size (default 50, max 200). */
unsigned store_page_size(const Credex__V1__PageRequest *p);

/* ---- keys (keywrap) --------------------------------------------------------------------- */

typedef struct store_wrapped {
    const uint8_t *ct;
    size_t ct_len;
    Credex__V1__KeyProvider provider;
    const char *key_id;
    const char *key_version;
} store_wrapped_t;

/* keywrap's current CMK (KeyWrap/Describe): what a CMK rotation moves data keys under. */
typedef struct store_key_target {
    Credex__V1__KeyProvider provider;
    const char *key_id; /* 1..STORE_KEY_ID_MAX bytes */
} store_key_target_t;

/* Where data keys come from: keywrap over mTLS in the service, a fake in unit tests. Wrapped
 * output lives in the call arena. Errors: keywrap's codes, its deadline or absence being
 * unavailable; a wrapped key keywrap does not know is integrity_error.
 *   rewrap:   w under the current CMK, same context (no plaintext key reaches store);
 *   describe: the current CMK; unavailable when keywrap says it is not usable.
 * rewrap and describe may be NULL (unit tests that do not rotate): RewrapDataKeys then answers
 * unavailable. */
typedef struct store_keys_ops {
    bool (*generate)(void *ctx, rpc_call_t *call, const cx_kv_t *pairs, size_t n, cx_secret_t **dek,
                     store_wrapped_t *wrapped, cx_error_t *err);
    bool (*unwrap)(void *ctx, rpc_call_t *call, const store_wrapped_t *w, const cx_kv_t *pairs,
                   size_t n, cx_secret_t **dek, cx_error_t *err);
    bool (*rewrap)(void *ctx, rpc_call_t *call, const store_wrapped_t *w, const cx_kv_t *pairs,
                   size_t n, store_wrapped_t *out, cx_error_t *err);
    bool (*describe)(void *ctx, rpc_call_t *call, store_key_target_t *out, cx_error_t *err);
    void *ctx;
} store_keys_ops_t;

/* keywrap client ops (ctx is an rpc_client_t *). */
store_keys_ops_t store_keys_keywrap(rpc_client_t *client);

/* ---- the store ------------------------------------------------------------------------ */

#include "common/config/cx_config.h"

typedef struct store {
    const cx_config_t *cfg;
    mdb_t *db;
    rpc_client_t *keywrap; /* NULL when keys were injected (tests) */
    store_keys_ops_t keys;
    store_dek_cache_t *dek;
    store_payload_cache_t *payloads;
    /* Metadata documents for Resolve (NULL when CREDEX_STORE_METADATA_CACHE_ENTRIES is 0).
     * Every write of a secret's metadata evicts its id before and after (lifecycle.c). */
    mdb_cache_t *meta;
    struct store_audit_batch *audit; /* store_audit_batch_t, below */
} store_t;

/* Build a store over the configured database; keys NULL means keywrap at
 * CREDEX_KEYWRAP_ADDR (expected peer "keywrap", TLS from the config). */
store_t *store_new(const cx_config_t *cfg, const store_keys_ops_t *keys, cx_error_t *err);
void store_free(store_t *st); /* NULL-safe */
/* Register credex.v1.CredentialStore for st on srv; health Checks of the service ping the
 * database. Handlers find st through rpc_call_context: the caller hands st to
 * rpc_server_set_context before starting the server (svc_main does, with setup's state). */
bool store_register(rpc_server_t *srv, store_t *st, cx_error_t *err);

/* A document's UTF-8 field copied into the arena; "" when absent or not a string. */
char *store_adup(rpc_arena_t *arena, const bson_t *doc, const char *key);

/* ---- audit ------------------------------------------------------------------------------ */

/* Append one event (event_id and created_at assigned here, written into e). Blocking, and
 * shared with concurrent callers (group commit, st->audit); the write concern of the database
 * applies. On failure err carries the mapped database code; callers answer unavailable whatever
 * it is (no audit record, no operation: store.proto). */
bool store_audit_insert(store_t *st, mongoc_client_t *c, Credex__V1__AuditEvent *e,
                        rpc_arena_t *arena, cx_error_t *err);

/* Group commit (audit_batch.c): concurrent callers share inserts of up to max events (1: one
 * insert per event). Thread-safe. */
typedef struct store_audit_batch store_audit_batch_t;

typedef struct store_audit_batch_stats {
    uint64_t inserts;  /* database inserts issued */
    uint64_t events;   /* events they carried */
    uint64_t grouped;  /* inserts that carried more than one event */
    uint64_t failed;   /* inserts that failed as a whole (each failed all of its events) */
    uint64_t isolated; /* inserts refused for one event, the others then written one by one */
    size_t largest;    /* most events in one insert */
} store_audit_batch_stats_t;

store_audit_batch_t *store_audit_batch_new(unsigned max);
void store_audit_batch_free(store_audit_batch_t *b); /* NULL-safe; no caller may be inside */
/* Queue doc and return once it is written (true) or its insert failed (false, err set from
 * mdb_error_map). Blocking: at most the inserts already queued ahead of it, each bounded by
 * the database timeouts. c is the caller's client; it writes other callers' events too when
 * this caller becomes the writer. doc must stay valid until the call returns. */
bool store_audit_batch_write(store_audit_batch_t *b, mdb_t *db, mongoc_client_t *c,
                             const bson_t *doc, cx_error_t *err);
void store_audit_batch_stats(store_audit_batch_t *b, store_audit_batch_stats_t *out);

/* Encode an event as a credential_audit_events document (for tests and the fuzz target). */
void store_audit_encode(const Credex__V1__AuditEvent *e, bson_t *out);
/* Decode a stored event into arena memory; false when malformed. */
bool store_audit_decode(const bson_t *doc, rpc_arena_t *arena, Credex__V1__AuditEvent *out);

/* Paging cursors: "<ms>.<id>" (opaque to callers). */
void store_cursor_encode(int64_t ms, const char *id, char *out, size_t outsz);
bool store_cursor_decode(const char *tok, int64_t *ms, char id[STORE_ID_BUF]);

/* ---- secret documents (secret_doc.c) --------------------------------------------------- */

/* A decoded credential_secret_refs document; everything in the call arena. */
typedef struct store_ref {
    Credex__V1__SecretMetadata *meta;
    const char *payload_id;  /* current_payload_id */
    const char *fingerprint; /* create_fingerprint */
} store_ref_t;

/* What a create writes: the request (validated) and what store derived from it. */
typedef struct store_ref_new {
    const Credex__V1__StoreCreateSecretRequest *req;
    const char *secret_id, *payload_id, *fingerprint, *actor;
    int64_t now_ms;
} store_ref_new_t;

/* The document of a new secret (version 1, active; _id = secret_id). */
void store_ref_encode(const store_ref_new_t *n, bson_t *out);

/* Decode a credential_secret_refs document into arena memory. Strict: every field it reads is
 * required (rotated_at, revoked_at, deleted_at excepted) and type- and shape-checked (ids,
 * owner, known enum names, allowed_uses entries [a-z0-9_.:-]{1,64} and at most 16, version
 * 1..UINT32_MAX, strings valid UTF-8 without control characters), so that a document altered
 * in the database is CX_ERR_INTEGRITY (naming the field, never its value), like a tampered
 * payload, and never reaches a handler. *out untouched on failure. */
bool store_ref_decode(rpc_arena_t *arena, const bson_t *doc, store_ref_t *out, cx_error_t *err);

/* The binding of a secret's current version (what its payload's AAD and encryption context
 * are made of), from its decoded metadata; points into ref. */
void store_bind_from_ref(const store_ref_t *ref, store_bind_t *b);

/* ---- the call context (dispatch.c) ----------------------------------------------------- */

/* One call as its handler sees it. The three facts a failure event may carry are set only once
 * they are known to be sound: the caller context and the secret id by the dispatch after
 * validating them, the owner by store_load_ref after decoding the metadata (or by CreateSecret
 * after validating its request). Success events are composed from the same facts. */
typedef struct store_ctx {
    store_t *st;
    rpc_call_t *call;
    rpc_arena_t *arena;
    const char *peer;
    mongoc_client_t *c; /* NULL until store_connect; pushed back by the dispatch */
    const Credex__V1__CallerContext *caller;
    const char *secret_id;
    const Credex__V1__Owner *owner;
    bool ref_cached; /* the last metadata loaded came from st->meta, not the database */
} store_ctx_t;

typedef bool (*store_handler_fn)(store_ctx_t *x, const ProtobufCMessage *request,
                                 ProtobufCMessage **reply, cx_error_t *err);

/* A database client for the rest of the call (idempotent). */
bool store_connect(store_ctx_t *x, cx_error_t *err);
/* Load and decode a secret's metadata: not_found when absent, integrity_error when the stored
 * document is malformed or is not the one asked for; sets x->owner. */
bool store_load_ref(store_ctx_t *x, const char *secret_id, store_ref_t *ref, cx_error_t *err);
/* The call's secret (x->secret_id), loaded as store_load_ref does, and refused as
 * permission_denied to a peer that may not touch its kind (store.proto). */
bool store_load_secret(store_ctx_t *x, store_ref_t *ref, cx_error_t *err);
/* store_load_secret through the metadata cache (st->meta, when on): the document may be up to
 * CREDEX_STORE_METADATA_CACHE_BOUND_MS behind a change made elsewhere, never behind one made
 * through this process; x->ref_cached tells whether the cache answered. For Resolve only: the
 * lifecycle methods read live, since their conditional writes start from what they read. */
bool store_load_secret_cached(store_ctx_t *x, store_ref_t *ref, cx_error_t *err);
/* Who acted: the validated caller's user, else its service, else the peer. */
const char *store_actor(const store_ctx_t *x);

/* ---- handlers ---------------------------------------------------------------------------- */

bool store_create(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err);
bool store_get(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
               cx_error_t *err);
bool store_update(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err);
bool store_rotate(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err);
bool store_revoke(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err);
bool store_delete(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                  cx_error_t *err);
bool store_resolve(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                   cx_error_t *err);
bool store_list_secrets(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err);
bool store_list_versions(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                         cx_error_t *err);
bool store_query_audit(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                       cx_error_t *err);
bool store_append_audit(store_ctx_t *x, const ProtobufCMessage *request, ProtobufCMessage **reply,
                        cx_error_t *err);
/* CheckDataKeys (keycheck.c): keywrap unwraps each probe's data key, store wipes it. */
bool store_check_data_keys(store_ctx_t *x, const ProtobufCMessage *request,
                           ProtobufCMessage **reply, cx_error_t *err);
/* RewrapDataKeys (rewrap.c): CMK rotation, one batch of stored data keys moved under keywrap's
 * current CMK. */
bool store_rewrap_data_keys(store_ctx_t *x, const ProtobufCMessage *request,
                            ProtobufCMessage **reply, cx_error_t *err);

/* ---- events (events.c) ------------------------------------------------------------------- */

/* Write one audit event about the call's secret: type, outcome, reason (CX_OK: none) and
 * attrs (at most 7 key/value pairs), everything else from x (caller, secret id, owner, peer,
 * correlation id). Blocking. On failure it logs store.audit_write_failed and err is
 * unavailable: no record, no change and no material (store.proto). */
bool store_audit(store_ctx_t *x, const char *event_type, Credex__V1__AuditOutcome outcome,
                 cx_code_t reason, const cx_kv_t *attrs, size_t nattrs, cx_error_t *err);

/* At most this many attributes in a Resolve's exchange_event (store.proto). */
#define STORE_EXCHANGE_ATTRS_MAX 8
/* Write a Resolve's exchange_event (validated by store_validate_resolve) as the call's success
 * record: the template's type, resource, subject, actor, peer, use, context and attributes
 * (then attrs, at most 7), with store's outcome (success), event id, time and the secret's
 * owner; the correlation id and peer default to the call's as for AppendAuditEvent. Blocking; on
 * failure as store_audit. */
bool store_audit_exchange(store_ctx_t *x, const Credex__V1__AuditEvent *tmpl, const cx_kv_t *attrs,
                          size_t nattrs, cx_error_t *err);

/* The one mapping of a failure to an audit outcome: DENIED when the request was refused
 * (unauthenticated, permission_denied, not_found, invalid_argument, browser_denied,
 * failed_precondition, ssrf_blocked, feature_disabled, resource_exhausted), FAILED when it
 * could not be carried out. */
Credex__V1__AuditOutcome store_failure_outcome(cx_code_t code);

/* The method table (dispatch.c), registered by store_register. */
extern const rpc_method_impl_t store_method_impls[];
extern const size_t store_method_nimpls;

#endif
