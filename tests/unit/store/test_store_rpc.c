/*
 * The CredentialStore service in process: a real rpc server with the store registered, real
 * mTLS clients (certificates of the rpc_pki fixture) calling as gateway, oauth and a peer that
 * is not allowed, a real FerretDB (fixture mdb_ferretdb), and a fake key-wrap provider (AES-GCM
 * under a test KEK with the encryption context as AAD, like local-cmk) so that the store is
 * tested without the keywrap process. Covers lifecycle, idempotency, masking, tampering and
 * swapping of stored fields, concurrent rotations, the DEK and payload caches, audit (and its
 * group commit), the feature toggle and outages of the database and of keywrap.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "services/store/store_internal.h"
#include "tests/unit/kit/testkit.h"

static char mongo_uri[256], dbname[64];

/* ---- fake keywrap ----------------------------------------------------------------------- */

typedef struct fake_kw {
    cx_secret_t *kek;
    atomic_int generates, unwraps;
    atomic_bool down;
    /* A wrapped key the fake refuses, like a key service whose old CMK was retired after a
     * rewrap (set between calls only). */
    uint8_t retired[64];
    size_t retired_len;
    /* CMK rotation: Describe names `target`; Rewrap answers under `rewrap_to` (NULL: target),
     * after calling `hook` (when set) with the secret id of the context, as if another writer
     * acted on that secret while keywrap rewrapped its key. */
    const char *target, *rewrap_to;
    void (*hook)(const char *secret_id);
} fake_kw_t;

static bool fake_generate(void *ctx, rpc_call_t *call, const cx_kv_t *pairs, size_t n,
                          cx_secret_t **dek, store_wrapped_t *w, cx_error_t *err)
{
    fake_kw_t *k = ctx;
    unsigned char raw[CX_AES_KEY_LEN], *aad = NULL;
    size_t aadlen = 0;
    if (atomic_load(&k->down))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap down (test)");
    atomic_fetch_add(&k->generates, 1);
    unsigned char *out = rpc_call_alloc(call, CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN);
    assert_true(cx_crypto_random(raw, sizeof(raw), err));
    assert_true(cx_crypto_context_encode(pairs, n, &aad, &aadlen, err));
    assert_true(cx_crypto_seal(k->kek, aad, aadlen, raw, sizeof(raw), out, out + CX_GCM_NONCE_LEN,
                               out + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN, err));
    free(aad);
    *dek = cx_secret_from(raw, sizeof(raw));
    cx_crypto_wipe(raw, sizeof(raw));
    w->ct = out;
    w->ct_len = CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN;
    w->provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    w->key_id = "alias/test";
    w->key_version = "1";
    return true;
}

static bool fake_unwrap(void *ctx, rpc_call_t *call, const store_wrapped_t *w, const cx_kv_t *pairs,
                        size_t n, cx_secret_t **dek, cx_error_t *err)
{
    (void)call;
    fake_kw_t *k = ctx;
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (atomic_load(&k->down))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap down (test)");
    atomic_fetch_add(&k->unwraps, 1);
    if (k->retired_len && w->ct_len == k->retired_len && memcmp(w->ct, k->retired, w->ct_len) == 0)
        return cx_error_set(err, CX_ERR_INTEGRITY, "wrapped key refused (retired CMK, test)");
    if (w->ct_len != CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN)
        return cx_error_set(err, CX_ERR_INTEGRITY, "bad wrapped key");
    assert_true(cx_crypto_context_encode(pairs, n, &aad, &aadlen, err));
    cx_secret_t *d = cx_crypto_open(k->kek, aad, aadlen, w->ct, w->ct + CX_GCM_NONCE_LEN,
                                    CX_AES_KEY_LEN, w->ct + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN, err);
    free(aad);
    if (!d)
        return cx_error_set(err, CX_ERR_INTEGRITY, "unwrap failed");
    *dek = d;
    return true;
}

/* The key of w, opened as fake_unwrap does, sealed again under the same KEK with a fresh nonce:
 * never a plaintext key in the answer, like keywrap's Rewrap. */
static bool fake_rewrap_key(void *ctx, rpc_call_t *call, const store_wrapped_t *w,
                            const cx_kv_t *pairs, size_t n, store_wrapped_t *out, cx_error_t *err)
{
    fake_kw_t *k = ctx;
    cx_secret_t *dek = NULL;
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    if (!fake_unwrap(ctx, call, w, pairs, n, &dek, err))
        return false;
    unsigned char *blob = rpc_call_alloc(call, CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN);
    assert_true(cx_crypto_context_encode(pairs, n, &aad, &aadlen, err));
    assert_true(cx_crypto_seal(k->kek, aad, aadlen, cx_secret_bytes(dek), cx_secret_len(dek), blob,
                               blob + CX_GCM_NONCE_LEN, blob + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN,
                               err));
    free(aad);
    cx_secret_free(dek);
    if (k->hook)
        k->hook(pairs[0].value); /* pairs[0] is secret_id (store_bind_context) */
    out->ct = blob;
    out->ct_len = CX_GCM_NONCE_LEN + CX_AES_KEY_LEN + CX_GCM_TAG_LEN;
    out->provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    out->key_id = k->rewrap_to ? k->rewrap_to : k->target;
    out->key_version = "1";
    return true;
}

static bool fake_describe(void *ctx, rpc_call_t *call, store_key_target_t *out, cx_error_t *err)
{
    (void)call;
    fake_kw_t *k = ctx;
    if (atomic_load(&k->down))
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "keywrap down (test)");
    out->provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    out->key_id = k->target;
    return true;
}

/* ---- fixture ---------------------------------------------------------------------------- */

typedef struct fx {
    cx_config_t *cfg;
    fake_kw_t kw;
    store_t *st;
    rpc_server_t *srv;
    rpc_client_t *gw, *oauth, *intruder;
    char addr[64];
} fx_t;

static fx_t F;

static const char *fx_getenv(void *ctx, const char *name)
{
    (void)ctx;
    if (strcmp(name, "CAIPE_CREDENTIALS_ENABLED") == 0)
        return "true";
    if (strcmp(name, "CREDEX_MONGO_URI") == 0)
        return mongo_uri;
    if (strcmp(name, "CREDEX_MONGO_DB") == 0)
        return dbname;
    if (strcmp(name, "CREDEX_MONGO_TIMEOUT_MS") == 0)
        return "1500";
    /* Off unless a test turns it on (test_metadata_cache): the other tests change documents
     * behind the store's back and expect the very next call to see it. */
    if (strcmp(name, "CREDEX_STORE_METADATA_CACHE_ENTRIES") == 0)
        return "0";
    return NULL;
}

static rpc_client_t *client_as(const char *who)
{
    return tk_client(F.addr, "store", who);
}

static int group_setup(void **state)
{
    (void)state;
    cx_error_t err;
    unsigned char kek[CX_AES_KEY_LEN];
    memset(kek, 0x5a, sizeof(kek));
    F.kw.kek = cx_secret_from(kek, sizeof(kek));
    assert_true(cx_config_load(&F.cfg, fx_getenv, NULL, &err));
    F.kw.target = "alias/test-b";
    store_keys_ops_t ops = {.generate = fake_generate,
                            .unwrap = fake_unwrap,
                            .rewrap = fake_rewrap_key,
                            .describe = fake_describe,
                            .ctx = &F.kw};
    F.st = store_new(F.cfg, &ops, &err);
    assert_non_null(F.st);
    if (!mdb_init_indexes(F.st->db, NULL, NULL, NULL, &err))
        fail_msg("init indexes: %s", err.message);
    rpc_server_options_t o = tk_server_options("store");
    o.threads = 8;
    o.max_message_bytes = 4 << 20;
    o.max_metadata_bytes = 16 << 10;
    o.max_deadline_ms = 10000;
    o.shutdown_grace_ms = 1000;
    F.srv = rpc_server_new(&o, &err);
    assert_non_null(F.srv);
    assert_true(store_register(F.srv, F.st, &err));
    rpc_server_set_context(F.srv, F.st); /* as svc_main does */
    assert_true(rpc_server_start(F.srv, &err));
    snprintf(F.addr, sizeof(F.addr), "127.0.0.1:%d", rpc_server_port(F.srv));
    F.gw = client_as("gateway");
    F.oauth = client_as("oauth");
    F.intruder = client_as("edge");
    return 0;
}

static pid_t kw_pid;

static int group_teardown(void **state)
{
    (void)state;
    if (kw_pid > 0) {
        int status;
        kill(kw_pid, SIGTERM);
        waitpid(kw_pid, &status, 0);
    }
    rpc_client_free(F.gw);
    rpc_client_free(F.oauth);
    rpc_client_free(F.intruder);
    rpc_server_free(F.srv);
    store_free(F.st);
    cx_config_free(F.cfg);
    cx_secret_free(F.kw.kek);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static bool call(rpc_client_t *c, const char *method, const ProtobufCMessage *req,
                 rpc_arena_t *arena, ProtobufCMessage **reply, cx_error_t *err)
{
    rpc_call_options_t o = {.deadline_ms = 5000, .correlation_id = "corr-store-test"};
    return rpc_client_unary(c, &credex__v1__credential_store__descriptor, method, req, &o, arena,
                            reply, err);
}

static Credex__V1__CallerContext caller_user(void)
{
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    c.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    c.subject_user_id = "alice";
    c.peer = "edge";
    return c;
}

static Credex__V1__ResourceContext rc_mcp = CREDEX__V1__RESOURCE_CONTEXT__INIT;

static Credex__V1__CallerContext caller_agent(void)
{
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    c.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    c.service_id = "agent-runtime";
    c.subject_user_id = "alice";
    c.peer = "agent-runtime";
    c.intended_use = "mcp.tool";
    rc_mcp.resource_type = "mcp_server";
    rc_mcp.resource_id = "github";
    c.resource_context = &rc_mcp;
    return c;
}

/* A create of a user's api_key (provider openai) by user alice through the UI; the request
 * points into *cr. */
typedef struct create_req {
    Credex__V1__StoreCreateSecretRequest r;
    Credex__V1__CallerContext caller;
    Credex__V1__Owner owner;
} create_req_t;

static void create_req_init(create_req_t *cr, const char *owner, const char *idem, const char *name,
                            const char *value)
{
    Credex__V1__StoreCreateSecretRequest r = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    cr->r = r;
    cr->owner = o;
    cr->caller = caller_user();
    cr->owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    cr->owner.owner_id = (char *)owner;
    cr->r.caller = &cr->caller;
    cr->r.owner = &cr->owner;
    cr->r.idempotency_key = (char *)idem;
    cr->r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    cr->r.display_name = (char *)name;
    cr->r.provider = "openai";
    cr->r.value.data = (uint8_t *)value;
    cr->r.value.len = strlen(value);
}

static Credex__V1__StoreCreateSecretResponse *create(rpc_client_t *c, rpc_arena_t *a,
                                                     const char *owner, const char *idem,
                                                     const char *name, const char *value,
                                                     cx_error_t *err)
{
    create_req_t cr;
    create_req_init(&cr, owner, idem, name, value);
    ProtobufCMessage *reply = NULL;
    if (!call(c, "CreateSecret", &cr.r.base, a, &reply, err))
        return NULL;
    return (Credex__V1__StoreCreateSecretResponse *)reply;
}

static Credex__V1__StoreResolveResponse *resolve(rpc_client_t *c, rpc_arena_t *a, const char *id,
                                                 cx_error_t *err)
{
    Credex__V1__StoreResolveRequest r = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    Credex__V1__CallerContext cc = caller_agent();
    r.caller = &cc;
    r.secret_id = (char *)id;
    ProtobufCMessage *reply = NULL;
    if (!call(c, "Resolve", &r.base, a, &reply, err))
        return NULL;
    return (Credex__V1__StoreResolveResponse *)reply;
}

static void expect_plain(const char *id, const char *value)
{
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreResolveResponse *r = resolve(F.gw, a, id, &err);
    if (!r)
        fail_msg("resolve: %s: %s", cx_code_reason(err.code), err.message);
    assert_int_equal(r->value.len, strlen(value));
    assert_memory_equal(r->value.data, value, r->value.len);
    rpc_arena_free(a);
}

static void expect_resolve_fails(const char *id, cx_code_t code)
{
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    assert_null(resolve(F.gw, a, id, &err));
    assert_int_equal(err.code, code);
    rpc_arena_free(a);
}

static Credex__V1__StoreRotateSecretResponse *rotate(rpc_client_t *c, rpc_arena_t *a,
                                                     const char *id, uint32_t expected,
                                                     const char *value, cx_error_t *err)
{
    Credex__V1__StoreRotateSecretRequest r = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    Credex__V1__CallerContext cc = caller_user();
    r.caller = &cc;
    r.secret_id = (char *)id;
    r.expected_version = expected;
    r.value.data = (uint8_t *)value;
    r.value.len = strlen(value);
    ProtobufCMessage *reply = NULL;
    if (!call(c, "RotateSecret", &r.base, a, &reply, err))
        return NULL;
    return (Credex__V1__StoreRotateSecretResponse *)reply;
}

static Credex__V1__SecretMetadata *simple(const char *method, const char *id, cx_error_t *err,
                                          rpc_arena_t *a)
{
    Credex__V1__CallerContext cc = caller_user();
    ProtobufCMessage *reply = NULL;
    bool ok;
    if (strcmp(method, "GetSecret") == 0) {
        Credex__V1__StoreGetSecretRequest r = CREDEX__V1__STORE_GET_SECRET_REQUEST__INIT;
        r.caller = &cc;
        r.secret_id = (char *)id;
        ok = call(F.gw, method, &r.base, a, &reply, err);
    } else if (strcmp(method, "RevokeSecret") == 0) {
        Credex__V1__StoreRevokeSecretRequest r = CREDEX__V1__STORE_REVOKE_SECRET_REQUEST__INIT;
        r.caller = &cc;
        r.secret_id = (char *)id;
        r.reason = "leaked";
        ok = call(F.gw, method, &r.base, a, &reply, err);
    } else {
        Credex__V1__StoreDeleteSecretRequest r = CREDEX__V1__STORE_DELETE_SECRET_REQUEST__INIT;
        r.caller = &cc;
        r.secret_id = (char *)id;
        ok = call(F.gw, method, &r.base, a, &reply, err);
    }
    return ok ? (Credex__V1__SecretMetadata *)reply : NULL;
}

static int64_t count_docs(const char *coll, const char *secret_id)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, coll);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    int64_t n = mongoc_collection_count_documents(col, f, NULL, NULL, NULL, &berr);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
    return n;
}

/* Replace (or restore) one field of the current payload of a secret. */
static void payload_get(const char *secret_id, bson_t *out)
{
    cx_error_t err;
    const bson_t *doc;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_PAYLOADS);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, f, NULL, NULL);
    assert_true(mongoc_cursor_next(cur, &doc));
    bson_copy_to(doc, out);
    mongoc_cursor_destroy(cur);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

static void payload_set_bin(const char *secret_id, const char *field, const uint8_t *data,
                            uint32_t len)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_PAYLOADS);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    bson_t *u = BCON_NEW("$set", "{", field, BCON_BIN(BSON_SUBTYPE_BINARY, data, len), "}");
    assert_true(mongoc_collection_update_many(col, f, u, NULL, NULL, &berr));
    bson_destroy(f);
    bson_destroy(u);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

static void get_bin(const bson_t *doc, const char *field, uint8_t *out, uint32_t *len)
{
    bson_iter_t it;
    bson_subtype_t st;
    const uint8_t *d;
    assert_true(bson_iter_init_find(&it, doc, field));
    bson_iter_binary(&it, &st, len, &d);
    memcpy(out, d, *len);
}

/* A second store over the same database with a few settings changed, serving the fixture's
 * server in place of F.st until alt_end (calls are sequential, so none is in flight). */
typedef struct alt {
    cx_config_t *cfg;
    store_t *st;
} alt_t;

static const char *const *alt_env; /* NULL-terminated name/value pairs */

static const char *alt_getenv(void *ctx, const char *name)
{
    for (size_t i = 0; alt_env && alt_env[i]; i += 2)
        if (strcmp(name, alt_env[i]) == 0)
            return alt_env[i + 1];
    return fx_getenv(ctx, name);
}

static store_t *alt_begin(alt_t *a, const char *const *env)
{
    cx_error_t err;
    alt_env = env;
    assert_true(cx_config_load(&a->cfg, alt_getenv, NULL, &err));
    alt_env = NULL;
    store_keys_ops_t ops = {.generate = fake_generate, .unwrap = fake_unwrap, .ctx = &F.kw};
    a->st = store_new(a->cfg, &ops, &err);
    if (!a->st)
        fail_msg("store_new: %s", err.message);
    rpc_server_set_context(F.srv, a->st);
    return a->st;
}

static void alt_end(alt_t *a)
{
    rpc_server_set_context(F.srv, F.st);
    store_free(a->st);
    cx_config_free(a->cfg);
}

/* The current payload id of a secret, from its metadata document. */
static void ref_payload_id(const char *secret_id, char out[STORE_ID_BUF])
{
    cx_error_t err;
    const bson_t *doc;
    bson_iter_t it;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_SECRET_REFS);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, f, NULL, NULL);
    assert_true(mongoc_cursor_next(cur, &doc));
    assert_true(bson_iter_init_find(&it, doc, "current_payload_id"));
    snprintf(out, STORE_ID_BUF, "%s", bson_iter_utf8(&it, NULL));
    mongoc_cursor_destroy(cur);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

/* What another replica's revoke or delete does to the metadata. */
static void ref_set_status(const char *secret_id, const char *status)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_SECRET_REFS);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    bson_t *u = BCON_NEW("$set", "{", "status", BCON_UTF8(status), "}");
    assert_true(mongoc_collection_update_one(col, f, u, NULL, NULL, &berr));
    bson_destroy(f);
    bson_destroy(u);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

static int64_t count_events(const char *resource_id, const char *event_type, const char *outcome)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_AUDIT_EVENTS);
    bson_t *f = BCON_NEW("resource_id", BCON_UTF8(resource_id), "event_type", BCON_UTF8(event_type),
                         "outcome", BCON_UTF8(outcome));
    int64_t n = mongoc_collection_count_documents(col, f, NULL, NULL, NULL, &berr);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
    return n;
}

static bool cache_holds(store_t *st, const char *payload_id)
{
    store_payload_t p;
    rpc_arena_t *arena = rpc_arena_new(256);
    bool hit = store_payload_cache_get(st->payloads, payload_id, mdb_now_ms(), arena, &p);
    rpc_arena_free(arena);
    return hit;
}

/* The wrapped key w (fake format) of version 1 of a user api_key of alice, wrapped again
 * under the same KEK with a fresh nonce: what a CMK rewrap stores. */
static void fake_rewrap(const char *secret_id, const uint8_t *w, uint8_t *out)
{
    cx_error_t err;
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    unsigned char *aad = NULL;
    size_t aadlen = 0;
    store_bind_t b = {.secret_id = secret_id,
                      .version = 1,
                      .owner_type = "user",
                      .owner_id = "alice",
                      .kind = "api_key"};
    store_bind_context(&b, ver, pairs);
    assert_true(cx_crypto_context_encode(pairs, STORE_CONTEXT_PAIRS, &aad, &aadlen, &err));
    cx_secret_t *dek = cx_crypto_open(F.kw.kek, aad, aadlen, w, w + CX_GCM_NONCE_LEN,
                                      CX_AES_KEY_LEN, w + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN, &err);
    assert_non_null(dek);
    assert_true(cx_crypto_seal(F.kw.kek, aad, aadlen, cx_secret_bytes(dek), cx_secret_len(dek), out,
                               out + CX_GCM_NONCE_LEN, out + CX_GCM_NONCE_LEN + CX_AES_KEY_LEN,
                               &err));
    cx_secret_free(dek);
    free(aad);
}

/* Two descriptions of one version agree in every field (and, packed, in every byte, so that a
 * field added later is compared too). */
static void expect_same_version(const Credex__V1__VersionInfo *got,
                                const Credex__V1__VersionInfo *stored)
{
    assert_string_equal(got->secret_id, stored->secret_id);
    assert_int_equal(got->version, stored->version);
    assert_string_equal(got->payload_id, stored->payload_id);
    assert_int_equal(got->state, stored->state);
    assert_string_equal(got->algorithm, stored->algorithm);
    assert_int_equal(got->key_provider, stored->key_provider);
    assert_string_equal(got->key_id, stored->key_id);
    assert_string_equal(got->key_version, stored->key_version);
    assert_string_equal(got->created_by, stored->created_by);
    assert_int_equal(got->created_at_ms, stored->created_at_ms);
    assert_int_equal(got->destroyed_at_ms, stored->destroyed_at_ms);
    size_t n = protobuf_c_message_get_packed_size(&got->base);
    assert_int_equal(n, protobuf_c_message_get_packed_size(&stored->base));
    uint8_t *a = malloc(n + 1), *b = malloc(n + 1);
    assert_int_equal(protobuf_c_message_pack(&got->base, a), n);
    assert_int_equal(protobuf_c_message_pack(&stored->base, b), n);
    assert_memory_equal(a, b, n);
    free(a);
    free(b);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_lifecycle(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(8192);
    Credex__V1__StoreCreateSecretResponse *c1 =
        create(F.gw, a, "alice", "life-1", "OpenAI", "sk-canary-value-1", &err);
    if (!c1)
        fail_msg("create: %s: %s", cx_code_reason(err.code), err.message);
    assert_true(c1->created);
    char id[STORE_ID_BUF];
    snprintf(id, sizeof(id), "%s", c1->secret->secret_id);
    store_secret_id_derive("user", "alice", "life-1", id);
    assert_string_equal(id, c1->secret->secret_id);
    assert_true(c1->secret->value_set);
    assert_string_equal(c1->secret->masked_value, "********");
    assert_int_equal(c1->secret->current_version, 1);
    assert_int_equal(c1->secret->status, CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE);

    /* Replay: same secret, created=false; different parameters: conflict. */
    Credex__V1__StoreCreateSecretResponse *c2 =
        create(F.gw, a, "alice", "life-1", "OpenAI", "sk-canary-value-1", &err);
    assert_non_null(c2);
    assert_false(c2->created);
    assert_string_equal(c2->secret->secret_id, id);
    assert_null(create(F.gw, a, "alice", "life-1", "Other name", "x", &err));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    assert_int_equal(count_docs(MDB_COLL_PAYLOADS, id), 1);

    expect_plain(id, "sk-canary-value-1");

    Credex__V1__StoreRotateSecretResponse *r = rotate(F.gw, a, id, 1, "sk-canary-value-2", &err);
    if (!r)
        fail_msg("rotate: %s", err.message);
    assert_int_equal(r->secret->current_version, 2);
    assert_int_equal(r->version->version, 2);
    assert_null(rotate(F.gw, a, id, 1, "sk-canary-value-3", &err));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    expect_plain(id, "sk-canary-value-2");

    /* Versions, newest first, no ciphertext. */
    Credex__V1__StoreListVersionsRequest lv = CREDEX__V1__STORE_LIST_VERSIONS_REQUEST__INIT;
    Credex__V1__CallerContext cc = caller_user();
    lv.caller = &cc;
    lv.secret_id = id;
    ProtobufCMessage *reply = NULL;
    assert_true(call(F.gw, "ListVersions", &lv.base, a, &reply, &err));
    Credex__V1__StoreListVersionsResponse *vr = (Credex__V1__StoreListVersionsResponse *)reply;
    assert_int_equal(vr->n_versions, 2);
    assert_int_equal(vr->versions[0]->version, 2);
    assert_int_equal(vr->versions[0]->state, CREDEX__V1__VERSION_STATE__VERSION_STATE_CURRENT);
    assert_int_equal(vr->versions[1]->state, CREDEX__V1__VERSION_STATE__VERSION_STATE_PREVIOUS);
    assert_string_equal(vr->versions[0]->algorithm, "AES-256-GCM");
    assert_string_equal(vr->versions[0]->key_id, "alias/test");
    /* RotateSecret's reply describes the new version exactly as it is stored and listed: the
     * wrapping key (the fake keywrap's local-cmk alias/test, version 1), the created_at. */
    assert_int_equal(r->version->key_provider, CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(r->version->key_version, "1");
    expect_same_version(r->version, vr->versions[0]);
    assert_int_equal(r->version->created_at_ms, r->secret->rotated_at_ms);
    /* Distinct data keys per version (distinct wrapped keys). */
    assert_int_equal(atomic_load(&F.kw.generates) >= 2, 1);

    /* Update. */
    Credex__V1__StoreUpdateSecretRequest up = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    char *mask[] = {"display_name"};
    up.caller = &cc;
    up.secret_id = id;
    up.display_name = "Renamed";
    up.n_update_mask = 1;
    up.update_mask = mask;
    assert_true(call(F.gw, "UpdateSecret", &up.base, a, &reply, &err));
    assert_string_equal(((Credex__V1__SecretMetadata *)reply)->display_name, "Renamed");

    /* Revoke: Resolve refuses; revoking again returns it unchanged. */
    Credex__V1__SecretMetadata *m = simple("RevokeSecret", id, &err, a);
    assert_non_null(m);
    assert_int_equal(m->status, CREDEX__V1__SECRET_STATUS__SECRET_STATUS_REVOKED);
    assert_true(m->revoked_at_ms > 0);
    expect_resolve_fails(id, CX_ERR_FAILED_PRECONDITION);
    assert_non_null(simple("RevokeSecret", id, &err, a));
    assert_null(rotate(F.gw, a, id, 2, "x", &err));
    assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);

    /* Delete: payloads destroyed, tombstone stays, idempotent. */
    m = simple("DeleteSecret", id, &err, a);
    assert_non_null(m);
    assert_int_equal(m->status, CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED);
    assert_false(m->value_set);
    assert_string_equal(m->masked_value, "");
    assert_int_equal(count_docs(MDB_COLL_PAYLOADS, id), 0);
    assert_int_equal(count_docs(MDB_COLL_SECRET_REFS, id), 1);
    assert_non_null(simple("DeleteSecret", id, &err, a));
    m = simple("GetSecret", id, &err, a);
    assert_non_null(m);
    assert_int_equal(m->status, CREDEX__V1__SECRET_STATUS__SECRET_STATUS_DELETED);
    expect_resolve_fails(id, CX_ERR_FAILED_PRECONDITION);
    assert_null(simple("GetSecret", "sec_00000000000000000000000000", &err, a));
    assert_int_equal(err.code, CX_ERR_NOT_FOUND);

    /* Audit trail of this secret: no material, correlation id recorded. */
    Credex__V1__StoreQueryAuditEventsRequest q = CREDEX__V1__STORE_QUERY_AUDIT_EVENTS_REQUEST__INIT;
    Credex__V1__AuditFilter af = CREDEX__V1__AUDIT_FILTER__INIT;
    af.resource_id = id;
    q.filter = &af;
    assert_true(call(F.gw, "QueryAuditEvents", &q.base, a, &reply, &err));
    Credex__V1__StoreQueryAuditEventsResponse *qr =
        (Credex__V1__StoreQueryAuditEventsResponse *)reply;
    const char *want[] = {"secret.created", "secret.rotated", "secret.retrieved",
                          "secret.updated", "secret.revoked", "secret.deleted"};
    for (size_t w = 0; w < 6; w++) {
        bool seen = false;
        for (size_t i = 0; i < qr->n_events; i++)
            if (strcmp(qr->events[i]->event_type, want[w]) == 0) {
                seen = true;
                assert_string_equal(qr->events[i]->correlation_id, "corr-store-test");
            }
        if (!seen)
            fail_msg("no %s event", want[w]);
    }
    bool denied_seen = false;
    for (size_t i = 0; i < qr->n_events; i++) {
        if (qr->events[i]->outcome == CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED &&
            strcmp(qr->events[i]->reason, "failed_precondition") == 0)
            denied_seen = true;
        for (size_t j = 0; j < qr->events[i]->n_attributes; j++)
            assert_null(strstr(qr->events[i]->attributes[j]->value, "canary"));
    }
    assert_true(denied_seen);
    /* Newest first. */
    for (size_t i = 1; i < qr->n_events; i++)
        assert_true(qr->events[i - 1]->created_at_ms >= qr->events[i]->created_at_ms);
    rpc_arena_free(a);
}

static void test_list_paging(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(8192);
    for (int i = 0; i < 5; i++) {
        char idem[32];
        snprintf(idem, sizeof(idem), "page-%d", i);
        assert_non_null(create(F.gw, a, "pager", idem, "Pager", "v", &err));
    }
    Credex__V1__StoreListSecretsRequest l = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    Credex__V1__CallerContext cc = caller_user();
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT, *owners[] = {&o};
    Credex__V1__PageRequest p = CREDEX__V1__PAGE_REQUEST__INIT;
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    o.owner_id = "pager";
    l.caller = &cc;
    l.n_owners = 1;
    l.owners = owners;
    p.page_size = 2;
    l.page = &p;
    size_t total = 0, pages = 0;
    char seen[8][STORE_ID_BUF];
    do {
        ProtobufCMessage *reply = NULL;
        if (!call(F.gw, "ListSecrets", &l.base, a, &reply, &err))
            fail_msg("list: %s", err.message);
        Credex__V1__StoreListSecretsResponse *r = (Credex__V1__StoreListSecretsResponse *)reply;
        assert_true(r->n_secrets <= 2);
        for (size_t i = 0; i < r->n_secrets; i++) {
            assert_string_equal(r->secrets[i]->owner->owner_id, "pager");
            for (size_t j = 0; j < total; j++)
                assert_string_not_equal(seen[j], r->secrets[i]->secret_id);
            snprintf(seen[total++], STORE_ID_BUF, "%s", r->secrets[i]->secret_id);
        }
        p.page_token = r->page->next_page_token;
        pages++;
    } while (p.page_token[0] && pages < 10);
    assert_int_equal(total, 5);
    assert_int_equal(pages, 3);
    p.page_token = "garbage";
    ProtobufCMessage *reply = NULL;
    assert_false(call(F.gw, "ListSecrets", &l.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    rpc_arena_free(a);
}

/* Every Resolve here must read the tampered document: the payload cache is off (as in the
 * e2e `nocache` pair). Tampering behind a cached entry is test_payload_cache_retry's. */
static const char *const no_payload_cache[] = {"CREDEX_PAYLOAD_CACHE_MAX_ENTRIES", "0", NULL};

static void test_tamper_and_swap(void **state)
{
    (void)state;
    cx_error_t err;
    alt_t alt;
    alt_begin(&alt, no_payload_cache);
    rpc_arena_t *a = rpc_arena_new(8192);
    Credex__V1__StoreCreateSecretResponse *ca =
        create(F.gw, a, "alice", "tamper-a", "A", "value-of-secret-A", &err);
    Credex__V1__StoreCreateSecretResponse *cb =
        create(F.gw, a, "alice", "tamper-b", "B", "value-of-secret-B", &err);
    assert_non_null(ca);
    assert_non_null(cb);
    const char *ida = ca->secret->secret_id, *idb = cb->secret->secret_id;
    expect_plain(ida, "value-of-secret-A"); /* warms the DEK cache */

    bson_t orig;
    payload_get(ida, &orig);
    const char *fields[] = {"ciphertext", "nonce", "tag", "wrapped_key"};
    for (size_t i = 0; i < 4; i++) {
        uint8_t buf[256];
        uint32_t len = 0;
        get_bin(&orig, fields[i], buf, &len);
        buf[len / 2] ^= 0x01;
        payload_set_bin(ida, fields[i], buf, len);
        expect_resolve_fails(ida, CX_ERR_INTEGRITY);
        buf[len / 2] ^= 0x01;
        payload_set_bin(ida, fields[i], buf, len);
        expect_plain(ida, "value-of-secret-A");
    }
    /* Swap B's whole envelope into A's document (ids kept): refused. */
    bson_t pb;
    payload_get(idb, &pb);
    for (size_t i = 0; i < 4; i++) {
        uint8_t buf[256];
        uint32_t len = 0;
        get_bin(&pb, fields[i], buf, &len);
        payload_set_bin(ida, fields[i], buf, len);
    }
    expect_resolve_fails(ida, CX_ERR_INTEGRITY);
    for (size_t i = 0; i < 4; i++) {
        uint8_t buf[256];
        uint32_t len = 0;
        get_bin(&orig, fields[i], buf, &len);
        payload_set_bin(ida, fields[i], buf, len);
    }
    expect_plain(ida, "value-of-secret-A");
    /* Malformed document (nonce of the wrong size). */
    uint8_t shortn[5] = {0};
    payload_set_bin(ida, "nonce", shortn, 5);
    expect_resolve_fails(ida, CX_ERR_INTEGRITY);
    bson_destroy(&orig);
    bson_destroy(&pb);
    rpc_arena_free(a);
    alt_end(&alt);
}

static void test_dek_cache(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "cache-1", "C", "cached-value", &err);
    assert_non_null(c);
    int before = atomic_load(&F.kw.unwraps);
    expect_plain(c->secret->secret_id, "cached-value");
    expect_plain(c->secret->secret_id, "cached-value");
    expect_plain(c->secret->secret_id, "cached-value");
    assert_int_equal(atomic_load(&F.kw.unwraps) - before, 1);
    rpc_arena_free(a);
}

static void test_peers_and_policy(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    /* Not on the allow-list at all. */
    assert_null(create(F.intruder, a, "alice", "peer-1", "X", "v", &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    /* oauth may not create user api keys. */
    assert_null(create(F.oauth, a, "alice", "peer-2", "X", "v", &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    /* oauth may not resolve or get a gateway kind. */
    Credex__V1__StoreCreateSecretResponse *c = create(F.gw, a, "alice", "peer-3", "X", "v", &err);
    assert_non_null(c);
    assert_null(resolve(F.oauth, a, c->secret->secret_id, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    /* oauth must always send expected_version. */
    assert_null(rotate(F.oauth, a, c->secret->secret_id, 0, "v2", &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    /* ListSecrets is gateway-only. */
    Credex__V1__StoreListSecretsRequest l = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    Credex__V1__CallerContext cc = caller_user();
    l.caller = &cc;
    ProtobufCMessage *reply = NULL;
    assert_false(call(F.oauth, "ListSecrets", &l.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    /* Migration preview stays unimplemented. */
    Credex__V1__StoreRecordMigrationPreviewRequest mp =
        CREDEX__V1__STORE_RECORD_MIGRATION_PREVIEW_REQUEST__INIT;
    assert_false(call(F.gw, "RecordMigrationPreview", &mp.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_UNIMPLEMENTED);
    /* Intended use outside allowed_uses. */
    Credex__V1__StoreUpdateSecretRequest up = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    char *mask[] = {"allowed_uses"}, *uses[] = {"ci.deploy"};
    up.caller = &cc;
    up.secret_id = c->secret->secret_id;
    up.n_update_mask = 1;
    up.update_mask = mask;
    up.n_allowed_uses = 1;
    up.allowed_uses = uses;
    assert_true(call(F.gw, "UpdateSecret", &up.base, a, &reply, &err));
    expect_resolve_fails(c->secret->secret_id, CX_ERR_PERMISSION_DENIED);
    rpc_arena_free(a);
}

static void test_feature_disabled(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    F.cfg->credentials_enabled = false;
    assert_null(create(F.gw, a, "alice", "off-1", "X", "v", &err));
    assert_int_equal(err.code, CX_ERR_FEATURE_DISABLED);
    assert_null(resolve(F.gw, a, "sec_00000000000000000000000000", &err));
    assert_int_equal(err.code, CX_ERR_FEATURE_DISABLED);
    F.cfg->credentials_enabled = true;
    rpc_arena_free(a);
}

typedef struct racer {
    const char *id;
    bool won;
    cx_code_t code;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    cx_error_t err = {0};
    rpc_arena_t *a = rpc_arena_new(4096);
    r->won = rotate(F.gw, a, r->id, 1, "racing-value", &err) != NULL;
    r->code = err.code;
    rpc_arena_free(a);
    return NULL;
}

static void test_concurrent_rotations(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c = create(F.gw, a, "alice", "race-1", "R", "v1", &err);
    assert_non_null(c);
    enum { N = 6 };
    pthread_t th[N];
    racer_t rs[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (racer_t){.id = c->secret->secret_id};
        pthread_create(&th[i], NULL, race, &rs[i]);
    }
    int wins = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        if (rs[i].won)
            wins++;
        else
            assert_int_equal(rs[i].code, CX_ERR_CONFLICT);
    }
    assert_int_equal(wins, 1);
    Credex__V1__SecretMetadata *m = simple("GetSecret", c->secret->secret_id, &err, a);
    assert_int_equal(m->current_version, 2);
    assert_int_equal(count_docs(MDB_COLL_PAYLOADS, c->secret->secret_id), 2);
    expect_plain(c->secret->secret_id, "racing-value");
    rpc_arena_free(a);
}

static void test_orphan_reclaim(void **state)
{
    (void)state;
    cx_error_t err;
    bson_error_t berr;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "orphan-1", "O", "v1", &err);
    assert_non_null(c);
    const char *id = c->secret->secret_id;
    /* A payload of version 2 left by a rotation that lost the database after step 1. */
    bson_t orig;
    payload_get(id, &orig);
    bson_t orphan = BSON_INITIALIZER;
    bson_iter_t it;
    assert_true(bson_iter_init(&it, &orig));
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        if (strcmp(k, "_id") == 0 || strcmp(k, "payload_id") == 0 || strcmp(k, "version") == 0 ||
            strcmp(k, "created_at") == 0)
            continue;
        bson_append_iter(&orphan, k, -1, &it);
    }
    BSON_APPEND_UTF8(&orphan, "payload_id", "pay_0RPHAN00000000000000000000");
    BSON_APPEND_INT64(&orphan, "version", 2);
    BSON_APPEND_DATE_TIME(&orphan, "created_at", mdb_now_ms());
    mongoc_client_t *mc = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, mc, MDB_COLL_PAYLOADS);
    assert_true(mongoc_collection_insert_one(col, &orphan, NULL, NULL, &berr));
    /* Recent: could be a rotation in progress, so it wins. */
    assert_null(rotate(F.gw, a, id, 1, "v2", &err));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    /* Old: reclaimed, the rotation goes through. */
    bson_t *f = BCON_NEW("payload_id", BCON_UTF8("pay_0RPHAN00000000000000000000"));
    bson_t *u = BCON_NEW("$set", "{", "created_at", BCON_DATE_TIME(mdb_now_ms() - 3600000), "}");
    assert_true(mongoc_collection_update_one(col, f, u, NULL, NULL, &berr));
    Credex__V1__StoreRotateSecretResponse *r = rotate(F.gw, a, id, 1, "v2", &err);
    if (!r)
        fail_msg("rotate after orphan: %s", err.message);
    assert_int_equal(r->secret->current_version, 2);
    expect_plain(id, "v2");
    assert_int_equal(count_docs(MDB_COLL_PAYLOADS, id), 2);
    bson_destroy(f);
    bson_destroy(u);
    bson_destroy(&orphan);
    bson_destroy(&orig);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, mc);
    rpc_arena_free(a);
}

static void test_keywrap_down(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c = create(F.gw, a, "alice", "kwdown-1", "K", "v", &err);
    assert_non_null(c);
    atomic_store(&F.kw.down, true);
    assert_null(create(F.gw, a, "alice", "kwdown-2", "K", "v", &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    expect_resolve_fails(c->secret->secret_id, CX_ERR_UNAVAILABLE); /* never resolved: uncached */
    atomic_store(&F.kw.down, false);
    /* The failed create left nothing behind: a retry creates it. */
    Credex__V1__StoreCreateSecretResponse *c2 =
        create(F.gw, a, "alice", "kwdown-2", "K", "v", &err);
    assert_non_null(c2);
    assert_true(c2->created);
    expect_plain(c->secret->secret_id, "v");
    rpc_arena_free(a);
}

/* CheckDataKeys (backup verify/restore): every probe is unwrapped by keywrap, never answered
 * from the DEK cache; a context other than the one the key was wrapped under is a failed check
 * (integrity_error), not a failed call; keywrap down fails the call; only the operator's
 * identity may call it. */
static void check_keys_probe(const char *sid, Credex__V1__StoreDataKeyProbe *p,
                             Credex__V1__Owner *o, Credex__V1__WrappedKey *w, bson_t *doc)
{
    char pid[STORE_ID_BUF];
    cx_error_t err;
    bool found = false;
    ref_payload_id(sid, pid);
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    bson_t *f = BCON_NEW("_id", BCON_UTF8(pid));
    assert_true(mdb_find_one(F.st->db, c, MDB_COLL_PAYLOADS, f, doc, &found, &err));
    assert_true(found);
    bson_destroy(f);
    mdb_client_push(F.st->db, c);
    store_payload_t sp;
    assert_true(store_payload_decode(doc, &sp, &err));
    credex__v1__store_data_key_probe__init(p);
    credex__v1__owner__init(o);
    credex__v1__wrapped_key__init(w);
    o->owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    o->owner_id = "alice";
    w->ciphertext.data = (uint8_t *)sp.wrapped;
    w->ciphertext.len = sp.wrapped_len;
    w->key_provider = sp.key_provider;
    w->key_id = (char *)sp.key_id;
    w->key_version = (char *)sp.key_version;
    p->secret_id = (char *)sid;
    p->version = sp.version;
    p->owner = o;
    p->kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    p->wrapped_key = w;
}

static void test_check_data_keys(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    rpc_client_t *op = client_as("credexctl");
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "keycheck-1", "K", "v", &err);
    assert_non_null(c);
    expect_plain(c->secret->secret_id, "v"); /* its data key is now in the DEK cache */
    Credex__V1__StoreDataKeyProbe good, moved;
    Credex__V1__Owner og, om;
    Credex__V1__WrappedKey wg, wm;
    bson_t dg, dm;
    check_keys_probe(c->secret->secret_id, &good, &og, &wg, &dg);
    check_keys_probe(c->secret->secret_id, &moved, &om, &wm, &dm);
    om.owner_id = "mallory"; /* the same key under another owner's context */
    Credex__V1__StoreDataKeyProbe *probes[] = {&good, &moved};
    Credex__V1__StoreCheckDataKeysRequest r = CREDEX__V1__STORE_CHECK_DATA_KEYS_REQUEST__INIT;
    r.n_probes = 2;
    r.probes = probes;
    ProtobufCMessage *reply = NULL;
    int before = atomic_load(&F.kw.unwraps);
    assert_true(call(op, "CheckDataKeys", &r.base, a, &reply, &err));
    assert_int_equal(atomic_load(&F.kw.unwraps) - before, 2);
    Credex__V1__StoreCheckDataKeysResponse *resp = (Credex__V1__StoreCheckDataKeysResponse *)reply;
    assert_int_equal(resp->n_checks, 2);
    assert_true(resp->checks[0]->ok);
    assert_string_equal(resp->checks[0]->reason, "");
    assert_false(resp->checks[1]->ok);
    assert_string_equal(resp->checks[1]->reason, "integrity_error");
    assert_string_equal(resp->checks[1]->secret_id, c->secret->secret_id);
    /* Not for the services. */
    assert_false(call(F.gw, "CheckDataKeys", &r.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    assert_false(call(F.oauth, "CheckDataKeys", &r.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    /* A malformed probe is refused as a whole. */
    wm.key_id = "";
    assert_false(call(op, "CheckDataKeys", &r.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    wm.key_id = wg.key_id;
    /* keywrap down says nothing about the key material. */
    atomic_store(&F.kw.down, true);
    assert_false(call(op, "CheckDataKeys", &r.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    atomic_store(&F.kw.down, false);
    bson_destroy(&dg);
    bson_destroy(&dm);
    rpc_client_free(op);
    rpc_arena_free(a);
}

static void test_audit_append_query(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(8192);
    for (int i = 0; i < 3; i++) {
        Credex__V1__StoreAppendAuditEventRequest r =
            CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
        Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
        e.event_type = "secret.shared";
        e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
        e.reason = "permission_denied";
        e.resource_type = "secret_ref";
        e.resource_id = "sec_AUDITTEST00000000000000000";
        e.subject_user_id = "bob";
        r.event = &e;
        ProtobufCMessage *reply = NULL;
        if (!call(F.oauth, "AppendAuditEvent", &r.base, a, &reply, &err))
            fail_msg("append: %s", err.message);
        assert_true(
            store_id_valid(((Credex__V1__StoreAppendAuditEventResponse *)reply)->event_id, "evt_"));
    }
    Credex__V1__StoreAppendAuditEventRequest bad =
        CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    assert_false(call(F.gw, "AppendAuditEvent", &bad.base, a, &reply, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);

    Credex__V1__StoreQueryAuditEventsRequest q = CREDEX__V1__STORE_QUERY_AUDIT_EVENTS_REQUEST__INIT;
    Credex__V1__AuditFilter af = CREDEX__V1__AUDIT_FILTER__INIT;
    Credex__V1__PageRequest p = CREDEX__V1__PAGE_REQUEST__INIT;
    af.subject_user_id = "bob";
    af.event_type = "secret.shared";
    q.filter = &af;
    p.page_size = 2;
    q.page = &p;
    assert_true(call(F.gw, "QueryAuditEvents", &q.base, a, &reply, &err));
    Credex__V1__StoreQueryAuditEventsResponse *r =
        (Credex__V1__StoreQueryAuditEventsResponse *)reply;
    assert_int_equal(r->n_events, 2);
    assert_string_not_equal(r->page->next_page_token, "");
    assert_string_equal(r->events[0]->peer, "oauth");
    p.page_token = r->page->next_page_token;
    assert_true(call(F.gw, "QueryAuditEvents", &q.base, a, &reply, &err));
    r = (Credex__V1__StoreQueryAuditEventsResponse *)reply;
    assert_int_equal(r->n_events, 1);
    assert_string_equal(r->page->next_page_token, "");
    rpc_arena_free(a);
}

/* ---- one failure audit for every store call (dispatch.c) ----------------------------------
 * Each failed call is looked up by its own correlation id: exactly one event, of the method's
 * type, with the outcome and reason of the failure, and none of what the request carried
 * unvalidated (the requests below mark such fields "unvalidated"). */

/* call with a fresh correlation id, written into cid. */
static bool call_cid(rpc_client_t *c, const char *method, const ProtobufCMessage *req,
                     rpc_arena_t *arena, ProtobufCMessage **reply, cx_error_t *err, char cid[40])
{
    rpc_correlation_id_new(cid, 40);
    rpc_call_options_t o = {.deadline_ms = 5000, .correlation_id = cid};
    return rpc_client_unary(c, &credex__v1__credential_store__descriptor, method, req, &o, arena,
                            reply, err);
}

/* The audit events written for correlation id cid: their number, and a copy of the first. */
static int64_t events_of(const char *cid, bson_t *first)
{
    cx_error_t err;
    const bson_t *doc;
    int64_t n = 0;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    assert_non_null(c);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_AUDIT_EVENTS);
    bson_t *f = BCON_NEW("correlation_id", BCON_UTF8(cid));
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(col, f, NULL, NULL);
    while (mongoc_cursor_next(cur, &doc))
        if (n++ == 0 && first)
            bson_copy_to(doc, first);
    assert_false(mongoc_cursor_error(cur, NULL));
    mongoc_cursor_destroy(cur);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
    return n;
}

static const char *doc_str(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, key) && BSON_ITER_HOLDS_UTF8(&it))
        return bson_iter_utf8(&it, NULL);
    return NULL;
}

typedef struct want {
    const char *type, *outcome, *reason;
    const char *resource_id; /* "" when the call named no (valid) secret */
    const char *owner_id;    /* NULL: no owner on the event */
    const char *subject;     /* "" when the caller context did not validate */
} want_t;

/* Exactly one event for cid, as w says, with nothing unvalidated in it. */
static void expect_event(const char *what, const char *cid, want_t w)
{
    bson_t ev;
    int64_t n = events_of(cid, &ev);
    if (n != 1)
        fail_msg("%s: %lld audit events, want exactly 1", what, (long long)n);
    char *json = bson_as_canonical_extended_json(&ev, NULL);
    if (strcmp(doc_str(&ev, "event_type"), w.type) != 0 ||
        strcmp(doc_str(&ev, "outcome"), w.outcome) != 0 ||
        strcmp(doc_str(&ev, "reason"), w.reason) != 0 ||
        strcmp(doc_str(&ev, "resource_id"), w.resource_id) != 0 ||
        strcmp(doc_str(&ev, "subject_user_id"), w.subject) != 0 ||
        (w.owner_id == NULL) != (doc_str(&ev, "owner_id") == NULL) ||
        (w.owner_id && strcmp(doc_str(&ev, "owner_id"), w.owner_id) != 0) ||
        strstr(json, "unvalidated"))
        fail_msg("%s: unexpected event %s", what, json);
    bson_free(json);
    bson_destroy(&ev);
}

static void expect_no_event(const char *what, const char *cid)
{
    int64_t n = events_of(cid, NULL);
    if (n != 0)
        fail_msg("%s: %lld audit events, want none", what, (long long)n);
}

/* A caller context that does not validate (no caller kind), full of marked values. */
static Credex__V1__CallerContext caller_unvalidated(void)
{
    static Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    rc.resource_type = "unvalidated-type";
    rc.resource_id = "unvalidated-resource";
    c.subject_user_id = "unvalidated-user";
    c.service_id = "unvalidated-service";
    c.peer = "unvalidated-peer";
    c.intended_use = "unvalidated.use";
    c.resource_context = &rc;
    return c;
}

/* One call of a method on one secret as peer c; the request's caller is *cc. Every such
 * request names them `caller` and `secret_id` (store.proto); Update renames, Rotate expects
 * version 1. */
static bool on_secret(rpc_client_t *c, const char *method, const char *id,
                      Credex__V1__CallerContext *cc, rpc_arena_t *a, cx_error_t *err, char cid[40])
{
    static char *mask[] = {"display_name"};
    const ProtobufCMessageDescriptor *d = protobuf_c_service_descriptor_get_method_by_name(
                                              &credex__v1__credential_store__descriptor, method)
                                              ->input;
    ProtobufCMessage *req = rpc_arena_alloc(a, d->sizeof_message), *reply = NULL;
    protobuf_c_message_init(d, req);
    *(Credex__V1__CallerContext **)((char *)req +
                                    protobuf_c_message_descriptor_get_field_by_name(d, "caller")
                                        ->offset) = cc;
    *(char **)((char *)req +
               protobuf_c_message_descriptor_get_field_by_name(d, "secret_id")->offset) =
        (char *)id;
    if (d == &credex__v1__store_update_secret_request__descriptor) {
        Credex__V1__StoreUpdateSecretRequest *u = (Credex__V1__StoreUpdateSecretRequest *)req;
        u->display_name = "Renamed";
        u->n_update_mask = 1;
        u->update_mask = mask;
    } else if (d == &credex__v1__store_rotate_secret_request__descriptor) {
        Credex__V1__StoreRotateSecretRequest *r = (Credex__V1__StoreRotateSecretRequest *)req;
        r->expected_version = 1;
        r->value.data = (uint8_t *)"rotated";
        r->value.len = 7;
    }
    return call_cid(c, method, req, a, &reply, err, cid);
}

static const char *const secret_methods[] = {"GetSecret",    "ListVersions", "RevokeSecret",
                                             "DeleteSecret", "UpdateSecret", "RotateSecret",
                                             "Resolve"};

static const char *event_of_method(const char *m)
{
    static const char *const map[][2] = {
        {"GetSecret", "secret.read"},       {"ListVersions", "secret.read"},
        {"RevokeSecret", "secret.revoked"}, {"DeleteSecret", "secret.deleted"},
        {"UpdateSecret", "secret.updated"}, {"RotateSecret", "secret.rotated"},
        {"Resolve", "secret.retrieved"},    {"CreateSecret", "secret.created"},
        {"ListSecrets", "secret.listed"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i][0], m) == 0)
            return map[i][1];
    fail_msg("no event type for %s", m);
    return NULL;
}

/* Invalid argument, not found and a peer not allowed for the kind, on every method that acts
 * on one secret; then the create and list failures. */
static void test_failure_audit_requests(void **state)
{
    (void)state;
    cx_error_t err;
    char cid[40], what[96];
    rpc_arena_t *a = rpc_arena_new(8192);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "fail-audit-1", "F", "fail-audit-value", &err);
    assert_non_null(c);
    const char *id = c->secret->secret_id, *absent = "sec_00000000000000000000000009";
    for (size_t i = 0; i < sizeof(secret_methods) / sizeof(secret_methods[0]); i++) {
        const char *m = secret_methods[i], *type = event_of_method(m);
        bool resolve = strcmp(m, "Resolve") == 0;
        Credex__V1__CallerContext bad = caller_unvalidated();
        Credex__V1__CallerContext good = resolve ? caller_agent() : caller_user();
        /* The caller context does not validate: nothing of the request is on record. */
        assert_false(on_secret(F.gw, m, id, &bad, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        snprintf(what, sizeof(what), "%s with an invalid caller", m);
        expect_event(what, cid, (want_t){type, "denied", "invalid_argument", "", NULL, ""});
        /* The caller validates, the secret id does not. */
        assert_false(on_secret(F.gw, m, "sec_unvalidated", &good, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        snprintf(what, sizeof(what), "%s with an invalid secret id", m);
        expect_event(what, cid, (want_t){type, "denied", "invalid_argument", "", NULL, "alice"});
        /* Not found: the id validated, no owner was loaded. */
        assert_false(on_secret(F.gw, m, absent, &good, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_NOT_FOUND);
        snprintf(what, sizeof(what), "%s of an absent secret", m);
        expect_event(what, cid, (want_t){type, "denied", "not_found", absent, NULL, "alice"});
        /* oauth may not touch a user's api_key: the owner was loaded before the refusal.
         * (Update and ListVersions are gateway-only: the rpc allow-list refuses oauth before
         * any handler, so store never sees those calls.) */
        if (strcmp(m, "UpdateSecret") != 0 && strcmp(m, "ListVersions") != 0) {
            Credex__V1__CallerContext sys = caller_agent();
            sys.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SYSTEM;
            assert_false(on_secret(F.oauth, m, id, &sys, a, &err, cid));
            assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
            snprintf(what, sizeof(what), "%s by a peer not allowed for the kind", m);
            expect_event(what, cid,
                         (want_t){type, "denied", "permission_denied", id, "alice", "alice"});
        }
    }

    /* CreateSecret: a field after the caller fails; oauth for a user api_key; a replay with
     * other parameters (conflict, audited with the derived id and the validated owner). */
    create_req_t cr;
    ProtobufCMessage *reply = NULL;
    create_req_init(&cr, "unvalidated-owner", "fail-audit-create", "unvalidated\nname", "v");
    assert_false(call_cid(F.gw, "CreateSecret", &cr.r.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    /* A request that fails the contract leaves nothing of itself in the event, not even its
     * (valid) caller context: one rule for the gateway and store. */
    expect_event("create with a bad display name", cid,
                 (want_t){"secret.created", "denied", "invalid_argument", "", NULL, ""});
    Credex__V1__CallerContext bad = caller_unvalidated();
    cr.r.caller = &bad;
    assert_false(call_cid(F.gw, "CreateSecret", &cr.r.base, a, &reply, &err, cid));
    expect_event("create with an invalid caller", cid,
                 (want_t){"secret.created", "denied", "invalid_argument", "", NULL, ""});
    create_req_init(&cr, "alice", "fail-audit-create", "F", "v");
    assert_false(call_cid(F.oauth, "CreateSecret", &cr.r.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    expect_event("create by a peer not allowed for the kind", cid,
                 (want_t){"secret.created", "denied", "permission_denied", "", NULL, "alice"});
    create_req_init(&cr, "alice", "fail-audit-1", "Other name", "v");
    assert_false(call_cid(F.gw, "CreateSecret", &cr.r.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    expect_event("create replayed with other parameters", cid,
                 (want_t){"secret.created", "failed", "conflict", id, "alice", "alice"});
    Credex__V1__CallerContext cc = caller_user();

    /* ListSecrets with a token store never issued. */
    Credex__V1__StoreListSecretsRequest l = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
    Credex__V1__PageRequest p = CREDEX__V1__PAGE_REQUEST__INIT;
    p.page_token = "unvalidated";
    l.caller = &cc;
    l.page = &p;
    assert_false(call_cid(F.gw, "ListSecrets", &l.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    expect_event("list with a bad page token", cid,
                 (want_t){"secret.listed", "denied", "invalid_argument", "", NULL, "alice"});

    /* Not audited by the dispatch: the audit RPCs themselves, a disabled feature. */
    Credex__V1__StoreAppendAuditEventRequest ae =
        CREDEX__V1__STORE_APPEND_AUDIT_EVENT_REQUEST__INIT;
    assert_false(call_cid(F.gw, "AppendAuditEvent", &ae.base, a, &reply, &err, cid));
    expect_no_event("invalid AppendAuditEvent", cid);
    Credex__V1__StoreQueryAuditEventsRequest q = CREDEX__V1__STORE_QUERY_AUDIT_EVENTS_REQUEST__INIT;
    Credex__V1__AuditFilter af = CREDEX__V1__AUDIT_FILTER__INIT;
    af.since_ms = -1;
    q.filter = &af;
    assert_false(call_cid(F.gw, "QueryAuditEvents", &q.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    expect_no_event("invalid QueryAuditEvents", cid);
    F.cfg->credentials_enabled = false;
    Credex__V1__CallerContext good = caller_user();
    assert_false(on_secret(F.gw, "GetSecret", id, &good, a, &err, cid));
    F.cfg->credentials_enabled = true;
    assert_int_equal(err.code, CX_ERR_FEATURE_DISABLED);
    expect_no_event("feature disabled", cid);
    rpc_arena_free(a);
}

/* The state of the secret refuses the call (failed precondition), a stale expected version
 * (conflict), a use or kind Resolve refuses, a browser caller, keywrap down; and the success
 * events are one per call too. */
static void test_failure_audit_states(void **state)
{
    (void)state;
    cx_error_t err;
    char cid[40];
    ProtobufCMessage *reply = NULL;
    rpc_arena_t *a = rpc_arena_new(8192);
    Credex__V1__CallerContext user = caller_user(), agent = caller_agent();
    create_req_t cr;
    char *uses[] = {"ci.deploy"};
    create_req_init(&cr, "alice", "fail-state-1", "S", "state-value");
    cr.r.n_allowed_uses = 1;
    cr.r.allowed_uses = uses;
    assert_true(call_cid(F.gw, "CreateSecret", &cr.r.base, a, &reply, &err, cid));
    char id[STORE_ID_BUF];
    snprintf(id, sizeof(id), "%s",
             ((Credex__V1__StoreCreateSecretResponse *)reply)->secret->secret_id);
    expect_event("create", cid, (want_t){"secret.created", "success", "", id, "alice", "alice"});

    /* Resolve: an intended use outside allowed_uses; another kind than expected; keywrap down
     * (never resolved before, so no cached data key); a browser caller. */
    assert_false(on_secret(F.gw, "Resolve", id, &agent, a, &err, cid));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    expect_event("resolve for a use not allowed", cid,
                 (want_t){"secret.retrieved", "denied", "permission_denied", id, "alice", "alice"});
    agent.intended_use = "ci.deploy";
    atomic_store(&F.kw.down, true);
    assert_false(on_secret(F.gw, "Resolve", id, &agent, a, &err, cid));
    atomic_store(&F.kw.down, false);
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    expect_event("resolve with keywrap down", cid,
                 (want_t){"secret.retrieved", "failed", "unavailable", id, "alice", "alice"});
    Credex__V1__StoreResolveRequest rr = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    rr.caller = &agent;
    rr.secret_id = id;
    rr.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_TOKEN;
    assert_false(call_cid(F.gw, "Resolve", &rr.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_NOT_FOUND);
    expect_event("resolve of another kind", cid,
                 (want_t){"secret.retrieved", "denied", "not_found", id, "alice", "alice"});
    Credex__V1__CallerContext browser = agent;
    browser.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    assert_false(on_secret(F.gw, "Resolve", id, &browser, a, &err, cid));
    assert_int_equal(err.code, CX_ERR_BROWSER_DENIED);
    expect_event("resolve by a browser", cid,
                 (want_t){"secret.retrieved", "denied", "browser_denied", id, NULL, "alice"});
    assert_true(on_secret(F.gw, "Resolve", id, &agent, a, &err, cid));
    expect_event("resolve", cid, (want_t){"secret.retrieved", "success", "", id, "alice", "alice"});

    /* RotateSecret: a stale expected version. */
    Credex__V1__StoreRotateSecretRequest ro = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    ro.caller = &user;
    ro.secret_id = id;
    ro.expected_version = 7;
    ro.value.data = (uint8_t *)"v2";
    ro.value.len = 2;
    assert_false(call_cid(F.gw, "RotateSecret", &ro.base, a, &reply, &err, cid));
    assert_int_equal(err.code, CX_ERR_CONFLICT);
    expect_event("rotate from a stale version", cid,
                 (want_t){"secret.rotated", "failed", "conflict", id, "alice", "alice"});

    /* Revoked: Resolve and Rotate refuse. */
    assert_true(on_secret(F.gw, "RevokeSecret", id, &user, a, &err, cid));
    expect_event("revoke", cid, (want_t){"secret.revoked", "success", "", id, "alice", "alice"});
    const char *on_revoked[] = {"Resolve", "RotateSecret"};
    for (size_t i = 0; i < 2; i++) {
        Credex__V1__CallerContext *cc = i == 0 ? &agent : &user;
        assert_false(on_secret(F.gw, on_revoked[i], id, cc, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
        expect_event(on_revoked[i], cid,
                     (want_t){event_of_method(on_revoked[i]), "denied", "failed_precondition", id,
                              "alice", "alice"});
    }
    /* Deleted: Update and Revoke refuse. */
    assert_true(on_secret(F.gw, "DeleteSecret", id, &user, a, &err, cid));
    expect_event("delete", cid, (want_t){"secret.deleted", "success", "", id, "alice", "alice"});
    const char *on_deleted[] = {"UpdateSecret", "RevokeSecret"};
    for (size_t i = 0; i < 2; i++) {
        assert_false(on_secret(F.gw, on_deleted[i], id, &user, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
        expect_event(on_deleted[i], cid,
                     (want_t){event_of_method(on_deleted[i]), "denied", "failed_precondition", id,
                              "alice", "alice"});
    }
    /* Repeating a delete changes nothing and writes nothing. */
    assert_true(on_secret(F.gw, "DeleteSecret", id, &user, a, &err, cid));
    expect_no_event("a second delete", cid);
    rpc_arena_free(a);
}

/* Set one field of a secret's metadata document to the value of the extended JSON json, as
 * someone with database access could; returns the document as it was (to put back with
 * ref_restore). */
static void ref_tamper(const char *secret_id, const char *field, const char *json, bson_t *before)
{
    cx_error_t err;
    bson_error_t berr;
    bool found = false;
    char upd[2048];
    bson_t *f = BCON_NEW("_id", BCON_UTF8(secret_id));
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    assert_non_null(c);
    assert_true(mdb_find_one(F.st->db, c, MDB_COLL_SECRET_REFS, f, before, &found, &err));
    assert_true(found);
    snprintf(upd, sizeof(upd), "{\"$set\": {\"%s\": %s}}", field, json);
    bson_t *u = bson_new_from_json((const uint8_t *)upd, -1, &berr);
    if (!u)
        fail_msg("bad test JSON %s: %s", upd, berr.message);
    bool matched = false;
    assert_true(mdb_update_one(F.st->db, c, MDB_COLL_SECRET_REFS, f, u, &matched, &err));
    assert_true(matched);
    bson_destroy(u);
    bson_destroy(f);
    mdb_client_push(F.st->db, c);
}

static void ref_restore(const char *secret_id, bson_t *before)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_SECRET_REFS);
    bson_t *f = BCON_NEW("_id", BCON_UTF8(secret_id));
    assert_true(mongoc_collection_replace_one(col, f, before, NULL, NULL, &berr));
    bson_destroy(f);
    bson_destroy(before);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

/* Metadata altered in the database is integrity_error for every method that reads it (never
 * unavailable, never an answer), audited once per call as a failure without an owner (it could
 * not be decoded); a list that meets such a row fails the same way. Restored, it works. */
static void test_tampered_metadata(void **state)
{
    (void)state;
    cx_error_t err;
    char cid[40], what[128];
    ProtobufCMessage *reply = NULL;
    rpc_arena_t *a = rpc_arena_new(8192);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "tampered-owner", "tampered-1", "T", "tampered-value", &err);
    assert_non_null(c);
    const char *id = c->secret->secret_id;
    static const struct {
        const char *field, *json;
        bool listed; /* the list's owner filter still selects the row */
    } cases[] = {
        {"owner_type", "\"robot\"", false},
        {"kind", "\"ssh_key\"", false},
        {"status", "\"paused\"", false},
        {"allowed_uses",
         "[\"u0\",\"u1\",\"u2\",\"u3\",\"u4\",\"u5\",\"u6\",\"u7\",\"u8\",\"u9\",\"ua\",\"ub\","
         "\"uc\",\"ud\",\"ue\",\"uf\",\"ug\"]",
         true},
        {"allowed_uses", "[\"Not A Use\"]", true},
        {"current_version", "0", true},
        {"current_version", "\"1\"", true},
        {"owner_id", "\"tampered|owner\"", false},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        bson_t before;
        ref_tamper(id, cases[k].field, cases[k].json, &before);
        for (size_t i = 0; i < sizeof(secret_methods) / sizeof(secret_methods[0]); i++) {
            const char *m = secret_methods[i];
            Credex__V1__CallerContext cc =
                strcmp(m, "Resolve") == 0 ? caller_agent() : caller_user();
            cc.subject_user_id = "tampered-owner";
            assert_false(on_secret(F.gw, m, id, &cc, a, &err, cid));
            snprintf(what, sizeof(what), "%s with %s = %s", m, cases[k].field, cases[k].json);
            if (err.code != CX_ERR_INTEGRITY)
                fail_msg("%s: %s, want integrity_error", what, cx_code_reason(err.code));
            expect_event(what, cid,
                         (want_t){event_of_method(m), "failed", "integrity_error", id, NULL,
                                  "tampered-owner"});
        }
        if (cases[k].listed) {
            Credex__V1__StoreListSecretsRequest l = CREDEX__V1__STORE_LIST_SECRETS_REQUEST__INIT;
            Credex__V1__CallerContext cc = caller_user();
            Credex__V1__Owner o = CREDEX__V1__OWNER__INIT, *owners[] = {&o};
            o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
            o.owner_id = "tampered-owner";
            l.caller = &cc;
            l.n_owners = 1;
            l.owners = owners;
            assert_false(call_cid(F.gw, "ListSecrets", &l.base, a, &reply, &err, cid));
            snprintf(what, sizeof(what), "ListSecrets with %s = %s", cases[k].field, cases[k].json);
            assert_int_equal(err.code, CX_ERR_INTEGRITY);
            expect_event(what, cid,
                         (want_t){"secret.listed", "failed", "integrity_error", "", NULL, "alice"});
        }
        ref_restore(id, &before);
    }
    Credex__V1__CallerContext cc = caller_user();
    assert_true(on_secret(F.gw, "GetSecret", id, &cc, a, &err, cid));
    expect_plain(id, "tampered-value");
    rpc_arena_free(a);
}

static const char *dead_getenv(void *ctx, const char *name)
{
    if (strcmp(name, "CREDEX_MONGO_URI") == 0)
        return "mongodb://127.0.0.1:9/";
    if (strcmp(name, "CREDEX_MONGO_TIMEOUT_MS") == 0)
        return "300";
    return fx_getenv(ctx, name);
}

static void test_database_down(void **state)
{
    (void)state;
    cx_error_t err;
    cx_config_t *cfg = NULL;
    rpc_arena_t *a = rpc_arena_new(4096);
    assert_true(cx_config_load(&cfg, dead_getenv, NULL, &err));
    store_keys_ops_t ops = {.generate = fake_generate, .unwrap = fake_unwrap, .ctx = &F.kw};
    store_t *dead = store_new(cfg, &ops, &err);
    assert_non_null(dead);
    rpc_server_set_context(F.srv, dead);
    int64_t t0 = tk_mono_ms();
    assert_null(create(F.gw, a, "alice", "dbdown-1", "D", "v", &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    /* One database timeout (300 ms), not one per follow-up write (failure audit, cleanup). */
    int64_t dt = tk_mono_ms() - t0;
    printf("create with the database down answered in %lld ms\n", (long long)dt);
    assert_true(dt < 1000);
    expect_resolve_fails("sec_00000000000000000000000000", CX_ERR_UNAVAILABLE);
    assert_true(tk_mono_ms() - t0 < 3000);
    /* Once the database is known to be down, every call answers at once, a refusal included
     * (its audit event cannot be written and is not tried). */
    for (int i = 0; i < 200 && mdb_is_up(dead->db); i++)
        usleep(10000);
    assert_false(mdb_is_up(dead->db));
    char cid[40];
    Credex__V1__CallerContext user = caller_user(), agent = caller_agent();
    for (size_t i = 0; i < sizeof(secret_methods) / sizeof(secret_methods[0]); i++) {
        Credex__V1__CallerContext *cc = strcmp(secret_methods[i], "Resolve") == 0 ? &agent : &user;
        int64_t t1 = tk_mono_ms();
        assert_false(
            on_secret(F.gw, secret_methods[i], "sec_00000000000000000000000000", cc, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        assert_true(tk_mono_ms() - t1 < 100);
        t1 = tk_mono_ms();
        assert_false(on_secret(F.gw, secret_methods[i], "sec_bad", cc, a, &err, cid));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT); /* refused: never audited */
        assert_true(tk_mono_ms() - t1 < 100);
    }
    rpc_server_set_context(F.srv, F.st);
    store_free(dead);
    cx_config_free(cfg);
    rpc_arena_free(a);
}

/* ---- payload cache and audit group commit ----------------------------------------------- */

static void test_payload_cache(void **state)
{
    (void)state;
    cx_error_t err;
    char pid[STORE_ID_BUF];
    store_payload_cache_stats_t s0, s1;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "pcache-1", "P", "payload-cached-value", &err);
    assert_non_null(c);
    const char *id = c->secret->secret_id;
    ref_payload_id(id, pid);
    assert_false(cache_holds(F.st, pid)); /* created, never retrieved: not cached */

    /* One read of the payload document, then hits. */
    store_payload_cache_stats(F.st->payloads, &s0);
    expect_plain(id, "payload-cached-value");
    expect_plain(id, "payload-cached-value");
    expect_plain(id, "payload-cached-value");
    store_payload_cache_stats(F.st->payloads, &s1);
    assert_int_equal(s1.misses - s0.misses, 1);
    assert_int_equal(s1.inserts - s0.inserts, 1);
    assert_int_equal(s1.hits - s0.hits, 2);
    assert_true(cache_holds(F.st, pid));

    /* With no metadata cache (the fixture's store), the metadata is read live: a revoke or
     * delete by another replica (straight in the database, so this store's cache still holds
     * the payload) is refused at once. */
    ref_set_status(id, "revoked");
    expect_resolve_fails(id, CX_ERR_FAILED_PRECONDITION);
    ref_set_status(id, "deleted");
    expect_resolve_fails(id, CX_ERR_FAILED_PRECONDITION);
    assert_true(cache_holds(F.st, pid));
    ref_set_status(id, "active");
    expect_plain(id, "payload-cached-value");

    /* A rotation elsewhere moves the metadata to a new payload id: never the cached one. */
    Credex__V1__StoreRotateSecretResponse *r = rotate(F.gw, a, id, 1, "rotated-value", &err);
    assert_non_null(r);
    assert_false(cache_holds(F.st, pid)); /* hygiene: this store's rotate evicted it */
    expect_plain(id, "rotated-value");
    ref_payload_id(id, pid);
    assert_true(cache_holds(F.st, pid));

    /* This store's revoke evicts the secret's entries. */
    assert_non_null(simple("RevokeSecret", id, &err, a));
    assert_false(cache_holds(F.st, pid));
    expect_resolve_fails(id, CX_ERR_FAILED_PRECONDITION);
    rpc_arena_free(a);
}

static void test_payload_cache_ttl_and_size(void **state)
{
    (void)state;
    cx_error_t err;
    alt_t alt;
    const char *const env[] = {"CREDEX_PAYLOAD_CACHE_MAX_ENTRIES", "2",
                               "CREDEX_PAYLOAD_CACHE_TTL_MS", "300", NULL};
    store_t *st = alt_begin(&alt, env);
    store_payload_cache_stats_t s;
    rpc_arena_t *a = rpc_arena_new(4096);
    char ids[3][STORE_ID_BUF], pids[3][STORE_ID_BUF];
    for (int i = 0; i < 3; i++) {
        char idem[32];
        snprintf(idem, sizeof(idem), "pbound-%d", i);
        Credex__V1__StoreCreateSecretResponse *c =
            create(F.gw, a, "alice", idem, "B", "bounded-value", &err);
        assert_non_null(c);
        snprintf(ids[i], STORE_ID_BUF, "%s", c->secret->secret_id);
        ref_payload_id(ids[i], pids[i]);
        expect_plain(ids[i], "bounded-value");
    }
    /* At most two entries: the oldest went. */
    store_payload_cache_stats(st->payloads, &s);
    assert_int_equal(s.entries, 2);
    assert_false(cache_holds(st, pids[0]));
    assert_true(cache_holds(st, pids[2]));
    /* Age: after the TTL the document is read again. */
    usleep(350 * 1000);
    store_payload_cache_stats(st->payloads, &s);
    uint64_t misses = s.misses;
    expect_plain(ids[2], "bounded-value");
    store_payload_cache_stats(st->payloads, &s);
    assert_int_equal(s.misses - misses, 1);
    assert_true(s.expired >= 1);
    rpc_arena_free(a);
    alt_end(&alt);
}

/* Anything failing after a hit evicts the entry and redoes the retrieval once from the
 * database: a CMK rewrap (the cached wrapped key is refused) is served from the new document;
 * a document tampered with behind the cached entry is then integrity_error, with no second
 * retry. The DEK cache is off so that every Resolve unwraps. */
static void test_payload_cache_retry(void **state)
{
    (void)state;
    cx_error_t err;
    alt_t alt;
    const char *const env[] = {"CREDEX_DEK_CACHE_MAX_ENTRIES", "0", NULL};
    store_t *st = alt_begin(&alt, env);
    store_payload_cache_stats_t s0, s1;
    char pid[STORE_ID_BUF];
    uint8_t w1[64], w2[60], w3[60], ct[256];
    uint32_t wlen = 0, ctlen = 0;
    bson_t doc;
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "pretry-1", "R", "retry-value", &err);
    assert_non_null(c);
    const char *id = c->secret->secret_id;
    ref_payload_id(id, pid);
    expect_plain(id, "retry-value");
    assert_true(cache_holds(st, pid));

    /* Rewrap in the database; keywrap refuses the old wrapped key from now on. */
    payload_get(id, &doc);
    get_bin(&doc, "wrapped_key", w1, &wlen);
    get_bin(&doc, "ciphertext", ct, &ctlen);
    bson_destroy(&doc);
    assert_int_equal(wlen, sizeof(w2));
    fake_rewrap(id, w1, w2);
    payload_set_bin(id, "wrapped_key", w2, sizeof(w2));
    memcpy(F.kw.retired, w1, wlen);
    F.kw.retired_len = wlen;
    int u0 = atomic_load(&F.kw.unwraps);
    store_payload_cache_stats(st->payloads, &s0);
    expect_plain(id, "retry-value");
    store_payload_cache_stats(st->payloads, &s1);
    assert_int_equal(atomic_load(&F.kw.unwraps) - u0, 2); /* cached (refused), then fresh */
    assert_int_equal(s1.hits - s0.hits, 1);
    assert_int_equal(s1.inserts - s0.inserts, 1); /* the fresh document replaced the entry */
    expect_plain(id, "retry-value");              /* now a plain hit again */

    /* Tamper behind the cached entry (ciphertext), with another rewrap so that the hit fails:
     * the retry reads the tampered document and answers integrity_error. */
    fake_rewrap(id, w2, w3);
    ct[ctlen / 2] ^= 0x01;
    payload_set_bin(id, "wrapped_key", w3, sizeof(w3));
    payload_set_bin(id, "ciphertext", ct, ctlen);
    memcpy(F.kw.retired, w2, sizeof(w2));
    F.kw.retired_len = sizeof(w2);
    u0 = atomic_load(&F.kw.unwraps);
    expect_resolve_fails(id, CX_ERR_INTEGRITY);
    assert_int_equal(atomic_load(&F.kw.unwraps) - u0, 2); /* retried once, not more */
    assert_false(cache_holds(st, pid));                   /* the failure is not cached */
    expect_resolve_fails(id, CX_ERR_INTEGRITY);
    /* Restored: served again. */
    ct[ctlen / 2] ^= 0x01;
    payload_set_bin(id, "ciphertext", ct, ctlen);
    expect_plain(id, "retry-value");
    F.kw.retired_len = 0;
    rpc_arena_free(a);
    alt_end(&alt);
}

/* Delete the payload documents of a secret, as another replica's DeleteSecret does after its
 * tombstone. */
static void payloads_delete_where(const char *field, const char *value)
{
    cx_error_t err;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    bson_t *f = BCON_NEW(field, BCON_UTF8(value));
    assert_true(mdb_delete_many(F.st->db, c, MDB_COLL_PAYLOADS, f, &err));
    bson_destroy(f);
    mdb_client_push(F.st->db, c);
}

static void payloads_delete(const char *secret_id)
{
    payloads_delete_where("secret_id", secret_id);
}

/* ---- CMK rotation (RewrapDataKeys) -------------------------------------------------------- */

/* What another writer does to a secret's payloads while keywrap rewraps one of its keys. */
static void hook_delete(const char *secret_id)
{
    payloads_delete(secret_id);
}

static void payloads_set_str(const char *secret_id, const char *field, const char *value)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_PAYLOADS);
    bson_t *f = BCON_NEW("secret_id", BCON_UTF8(secret_id));
    bson_t *u = BCON_NEW("$set", "{", field, BCON_UTF8(value), "}");
    assert_true(mongoc_collection_update_many(col, f, u, NULL, NULL, &berr));
    bson_destroy(f);
    bson_destroy(u);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
}

static void hook_moved_by_another_run(const char *secret_id)
{
    payloads_set_str(secret_id, "key_id", F.kw.target);
}

static void hook_key_changed(const char *secret_id)
{
    const uint8_t other[60] = {1};
    payload_set_bin(secret_id, "wrapped_key", other, sizeof other);
}

/* The payload id just before pid (same length, Crockford order, which is ASCII order), so that
 * a batch of one from it is pid's key (or the first key after it that is not under target). */
static void payload_id_before(const char *pid, char out[STORE_ID_BUF])
{
    static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    snprintf(out, STORE_ID_BUF, "%s", pid);
    for (size_t i = strlen(out); i-- > 4;) {
        if (out[i] != '0') {
            out[i] = alphabet[strchr(alphabet, out[i]) - alphabet - 1];
            return;
        }
        out[i] = 'Z';
    }
    fail_msg("no payload id before %s", pid);
}

/* One RewrapDataKeys call as the operator, of at most one key: pid's. */
static Credex__V1__StoreRewrapDataKeysResponse *rewrap_one(rpc_arena_t *a, const char *pid,
                                                           cx_error_t *err)
{
    rpc_client_t *op = client_as("credexctl");
    char after[STORE_ID_BUF];
    payload_id_before(pid, after);
    Credex__V1__StoreRewrapDataKeysRequest r = CREDEX__V1__STORE_REWRAP_DATA_KEYS_REQUEST__INIT;
    r.run_id = "unit-rewrap";
    r.after_payload_id = after;
    r.limit = 1;
    ProtobufCMessage *reply = NULL;
    bool ok = call(op, "RewrapDataKeys", &r.base, a, &reply, err);
    rpc_client_free(op);
    return ok ? (Credex__V1__StoreRewrapDataKeysResponse *)reply : NULL;
}

/* A fresh secret of alice (one version) and its payload id. */
static const char *rewrap_secret(rpc_arena_t *a, char pid[STORE_ID_BUF])
{
    static int made;
    cx_error_t err;
    char idem[64];
    snprintf(idem, sizeof idem, "rewrap-%lld-%d", (long long)mdb_now_ms(), made++);
    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", idem, "R", "rw-value", &err);
    assert_non_null(c);
    ref_payload_id(c->secret->secret_id, pid);
    return c->secret->secret_id;
}

/* rewrap_one with hook run while keywrap rewraps; the call must succeed. */
static Credex__V1__StoreRewrapDataKeysResponse *rewrap_hooked(rpc_arena_t *a, const char *pid,
                                                              void (*hook)(const char *))
{
    cx_error_t err;
    F.kw.hook = hook;
    Credex__V1__StoreRewrapDataKeysResponse *r = rewrap_one(a, pid, &err);
    F.kw.hook = NULL;
    if (!r)
        fail_msg("rewrap: %s: %s", cx_code_reason(err.code), err.message);
    return r;
}

static void expect_key_id(const char *secret_id, const char *key_id)
{
    bson_t doc;
    bson_iter_t it;
    payload_get(secret_id, &doc);
    assert_true(bson_iter_init_find(&it, &doc, "key_id"));
    assert_string_equal(bson_iter_utf8(&it, NULL), key_id);
    bson_destroy(&doc);
}

/* The replace-only-if-unchanged rule, the per-key failures and the whole-call ones. */
static void test_rewrap_data_keys(void **state)
{
    (void)state;
    cx_error_t err;
    rpc_arena_t *a = rpc_arena_new(4096);
    char pid[STORE_ID_BUF];
    Credex__V1__StoreRewrapDataKeysResponse *r;

    /* Moved: under the target, the same value, one event, the payload cache dropped. */
    const char *s1 = rewrap_secret(a, pid);
    expect_plain(s1, "rw-value");
    assert_true(cache_holds(F.st, pid));
    r = rewrap_hooked(a, pid, NULL);
    assert_int_equal(r->rewrapped, 1);
    assert_int_equal(r->n_failures, 0);
    assert_string_equal(r->target_key_id, "alias/test-b");
    expect_key_id(s1, "alias/test-b");
    assert_false(cache_holds(F.st, pid));
    assert_int_equal(count_events(s1, "secret.key_rewrapped", "success"), 1);
    expect_plain(s1, "rw-value");
    /* Idempotent: the key is under the target, a batch from it finds another key or none. */
    r = rewrap_hooked(a, pid, NULL);
    assert_int_equal(count_events(s1, "secret.key_rewrapped", "success"), 1);

    /* Deleted while keywrap rewrapped it: never written back (no upsert), nothing reported. */
    const char *s2 = rewrap_secret(a, pid);
    r = rewrap_hooked(a, pid, hook_delete);
    assert_int_equal(r->rewrapped + r->already_current + r->n_failures, 0);
    assert_int_equal(count_docs(MDB_COLL_PAYLOADS, s2), 0);
    {
        bool found = true;
        bson_t doc;
        mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
        bson_t *f = BCON_NEW("_id", BCON_UTF8(pid));
        assert_true(mdb_find_one(F.st->db, c, MDB_COLL_PAYLOADS, f, &doc, &found, &err));
        assert_false(found); /* not even a partial document under its id */
        bson_destroy(f);
        mdb_client_push(F.st->db, c);
    }
    assert_int_equal(count_events(s2, "secret.key_rewrapped", "success"), 0);

    /* Moved by another run meanwhile: already current, no second event. */
    const char *s3 = rewrap_secret(a, pid);
    r = rewrap_hooked(a, pid, hook_moved_by_another_run);
    assert_int_equal(r->already_current, 1);
    assert_int_equal(r->rewrapped, 0);
    assert_int_equal(count_events(s3, "secret.key_rewrapped", "success"), 0);

    /* Its wrapped key changed otherwise meanwhile: conflict, reported and audited, kept. */
    const char *s4 = rewrap_secret(a, pid);
    r = rewrap_hooked(a, pid, hook_key_changed);
    assert_int_equal(r->n_failures, 1);
    assert_string_equal(r->failures[0]->reason, "conflict");
    assert_string_equal(r->failures[0]->payload_id, pid);
    assert_string_equal(r->failures[0]->secret_id, s4);
    assert_int_equal(r->failures[0]->version, 1);
    expect_key_id(s4, "alias/test");
    assert_int_equal(count_events(s4, "secret.key_rewrap_failed", "failed"), 1);
    payloads_delete(s4); /* its key is garbage now; out of the later batches' way */

    /* A key keywrap refuses (another secret's context): integrity_error, passed over. */
    const char *s5 = rewrap_secret(a, pid);
    bson_t d1;
    uint8_t w1[STORE_WRAPPED_MAX];
    uint32_t w1_len = 0;
    payload_get(s1, &d1);
    get_bin(&d1, "wrapped_key", w1, &w1_len);
    bson_destroy(&d1);
    payload_set_bin(s5, "wrapped_key", w1, w1_len); /* s1's key swapped into s5's payload */
    r = rewrap_hooked(a, pid, NULL);
    assert_int_equal(r->n_failures, 1);
    assert_string_equal(r->failures[0]->reason, "integrity_error");
    assert_string_equal(r->failures[0]->secret_id, s5);
    assert_int_equal(count_events(s5, "secret.key_rewrap_failed", "failed"), 1);
    expect_key_id(s5, "alias/test");
    payloads_delete_where("_id", pid); /* out of the later batches' way */

    /* keywrap replicas disagree on the current CMK: the whole call fails, nothing replaced. */
    const char *s6 = rewrap_secret(a, pid);
    F.kw.rewrap_to = "alias/test-old";
    assert_null(rewrap_one(a, pid, &err));
    F.kw.rewrap_to = NULL;
    assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
    assert_non_null(strstr(err.message, "keywrap replicas disagree"));
    expect_key_id(s6, "alias/test");
    assert_int_equal(count_events(s6, "secret.key_rewrapped", "success"), 0);

    /* keywrap down: unavailable for the whole call, nothing replaced. */
    atomic_store(&F.kw.down, true);
    assert_null(rewrap_one(a, pid, &err));
    atomic_store(&F.kw.down, false);
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_non_null(strstr(err.message, "keywrap: "));
    expect_key_id(s6, "alias/test");
    r = rewrap_hooked(a, pid, NULL);
    assert_int_equal(r->rewrapped, 1);
    expect_plain(s6, "rw-value");
    rpc_arena_free(a);
}

/* Resolve until it fails with code, for at most twice the bound; returns how long after `since`
 * (tk_mono_ms) the last successful Resolve had started (-1: none succeeded). */
static int64_t resolve_until_refused(const char *id, cx_code_t code, int64_t since)
{
    int64_t last_ok = -1;
    for (;;) {
        cx_error_t err;
        rpc_arena_t *a = rpc_arena_new(4096);
        int64_t started = tk_mono_ms();
        bool ok = resolve(F.gw, a, id, &err) != NULL;
        rpc_arena_free(a);
        if (ok)
            last_ok = started - since;
        else
            assert_int_equal(err.code, code);
        if (!ok || started - since > 600)
            return last_ok;
    }
}

/* The metadata cache on (the shipped defaults: bound 300 ms, poll 100 ms; payload cache off,
 * so that every Resolve reads the payload document): Resolve answers the metadata from memory;
 * this store's revoke is refused at the very next call; a delete by another replica (tombstone
 * and payloads gone, straight in the database) is refused, never integrity_error, although the
 * cached metadata still points at the vanished payload (the retry from the database); a revoke
 * made straight in the database is refused by every Resolve that starts 300 ms after it. */
static void test_metadata_cache(void **state)
{
    (void)state;
    cx_error_t err;
    alt_t alt;
    const char *const env[] = {"CREDEX_STORE_METADATA_CACHE_ENTRIES", "64",
                               "CREDEX_PAYLOAD_CACHE_MAX_ENTRIES", "0", NULL};
    store_t *st = alt_begin(&alt, env);
    assert_non_null(st->meta);
    rpc_arena_t *a = rpc_arena_new(4096);
    mdb_cache_stats_t s0, s1;
    int64_t t0 = tk_mono_ms();
    do { /* its watcher's first round */
        usleep(5000);
        mdb_cache_stats(st->meta, &s0);
    } while (!s0.enabled && tk_mono_ms() - t0 < 3000);
    assert_true(s0.enabled);
    char ids[3][STORE_ID_BUF];
    for (int i = 0; i < 3; i++) {
        char idem[32];
        snprintf(idem, sizeof(idem), "mcache-%d", i);
        Credex__V1__StoreCreateSecretResponse *c =
            create(F.gw, a, "alice", idem, "M", "meta-cached-value", &err);
        assert_non_null(c);
        snprintf(ids[i], STORE_ID_BUF, "%s", c->secret->secret_id);
    }
    mdb_cache_stats(st->meta, &s0);
    for (int i = 0; i < 3; i++) {
        expect_plain(ids[0], "meta-cached-value");
        expect_plain(ids[1], "meta-cached-value");
    }
    mdb_cache_stats(st->meta, &s1);
    assert_true(s1.hits - s0.hits >= 3); /* answered from memory */

    /* This store's revoke: refused at the very next Resolve. */
    assert_non_null(simple("RevokeSecret", ids[0], &err, a));
    expect_resolve_fails(ids[0], CX_ERR_FAILED_PRECONDITION);

    /* Another replica deletes ids[1]: the cached metadata points at a payload that is gone. */
    ref_set_status(ids[1], "deleted");
    payloads_delete(ids[1]);
    expect_resolve_fails(ids[1], CX_ERR_FAILED_PRECONDITION);
    expect_resolve_fails(ids[1], CX_ERR_FAILED_PRECONDITION);

    /* A revoke straight in the database, while the secret is in use. */
    for (int i = 0; i < 5; i++) {
        expect_plain(ids[2], "meta-cached-value");
        usleep(20000);
    }
    ref_set_status(ids[2], "revoked");
    int64_t written = tk_mono_ms();
    int64_t last_ok = resolve_until_refused(ids[2], CX_ERR_FAILED_PRECONDITION, written);
    printf("metadata cache: a revoke in the database was last missed by a Resolve that started "
           "%lld ms after it (bound 300 ms)\n",
           (long long)last_ok);
    assert_true(last_ok < 300);
    expect_resolve_fails(ids[2], CX_ERR_FAILED_PRECONDITION);
    rpc_arena_free(a);
    alt_end(&alt);
}

typedef struct resolver {
    const char *id;
    pthread_barrier_t *go;
    bool ok;
    cx_code_t code;
} resolver_t;

static void *resolver_run(void *arg)
{
    resolver_t *r = arg;
    cx_error_t err = {0};
    rpc_arena_t *a = rpc_arena_new(4096);
    pthread_barrier_wait(r->go);
    r->ok = resolve(F.gw, a, r->id, &err) != NULL;
    r->code = err.code;
    rpc_arena_free(a);
    return NULL;
}

/* N concurrent Resolves: each succeeds with exactly one secret.retrieved event on record, and
 * inserts carrying several events do happen. */
static void test_audit_group_commit(void **state)
{
    (void)state;
    enum { N = 16 };
    cx_error_t err;
    store_audit_batch_stats_t s0, s1;
    rpc_arena_t *a = rpc_arena_new(4096);
    store_audit_batch_stats(F.st->audit, &s0);
    int rounds = 0;
    do {
        char idem[32];
        snprintf(idem, sizeof(idem), "group-%d", rounds);
        Credex__V1__StoreCreateSecretResponse *c =
            create(F.gw, a, "alice", idem, "G", "grouped-value", &err);
        assert_non_null(c);
        pthread_t th[N];
        resolver_t rs[N];
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, N);
        for (int i = 0; i < N; i++) {
            rs[i] = (resolver_t){.id = c->secret->secret_id, .go = &go};
            pthread_create(&th[i], NULL, resolver_run, &rs[i]);
        }
        for (int i = 0; i < N; i++) {
            pthread_join(th[i], NULL);
            if (!rs[i].ok)
                fail_msg("concurrent resolve %d: %s", i, cx_code_reason(rs[i].code));
        }
        pthread_barrier_destroy(&go);
        assert_int_equal(count_events(c->secret->secret_id, "secret.retrieved", "success"), N);
        store_audit_batch_stats(F.st->audit, &s1);
        rounds++;
    } while (s1.grouped == s0.grouped && rounds < 5);
    printf("audit group commit: %llu inserts for %llu events, largest %zu (%d rounds)\n",
           (unsigned long long)(s1.inserts - s0.inserts),
           (unsigned long long)(s1.events - s0.events), s1.largest, rounds);
    assert_true(s1.grouped > s0.grouped);
    assert_true(s1.largest > 1);
    assert_true(s1.inserts - s0.inserts < s1.events - s0.events);
    rpc_arena_free(a);
}

typedef struct auditor {
    store_t *st;
    pthread_barrier_t *go;
    char resource[STORE_ID_BUF];
    bool ok;
    cx_code_t code;
} auditor_t;

static void *auditor_run(void *arg)
{
    auditor_t *t = arg;
    cx_error_t err = {0};
    rpc_arena_t *a = rpc_arena_new(4096);
    /* A client of the live database even when t->st's is down (its writes then fail before
     * using the client). */
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    assert_non_null(c);
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    e.event_type = "secret.retrieved";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.resource_type = "secret_ref";
    e.resource_id = t->resource;
    pthread_barrier_wait(t->go);
    t->ok = store_audit_insert(t->st, c, &e, a, &err);
    t->code = err.code;
    mdb_client_push(F.st->db, c);
    rpc_arena_free(a);
    return NULL;
}

/* n threads append one event each to st at the same moment. */
static void audit_burst(store_t *st, int n, const char *resource, auditor_t *ts)
{
    pthread_t th[32];
    pthread_barrier_t go;
    assert_true(n <= 32);
    pthread_barrier_init(&go, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        ts[i] = (auditor_t){.st = st, .go = &go};
        snprintf(ts[i].resource, sizeof(ts[i].resource), "%s", resource);
        pthread_create(&th[i], NULL, auditor_run, &ts[i]);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
}

/* CREDEX_AUDIT_BATCH_MAX=1 is one insert per event (the behaviour before group commit); with
 * the database down every event of every batch fails, within the database timeouts. */
static void test_audit_batch_one_and_down(void **state)
{
    (void)state;
    enum { N = 12 };
    auditor_t ts[N];
    store_audit_batch_stats_t s;
    alt_t alt;
    const char *const one[] = {"CREDEX_AUDIT_BATCH_MAX", "1", NULL};
    store_t *st = alt_begin(&alt, one);
    audit_burst(st, N, "sec_AUD1TBATCH0NE0000000000000", ts);
    for (int i = 0; i < N; i++)
        assert_true(ts[i].ok);
    store_audit_batch_stats(st->audit, &s);
    assert_int_equal(s.inserts, N);
    assert_int_equal(s.events, N);
    assert_int_equal(s.grouped, 0);
    assert_int_equal(count_events("sec_AUD1TBATCH0NE0000000000000", "secret.retrieved", "success"),
                     N);
    alt_end(&alt);

    const char *const dead[] = {"CREDEX_MONGO_URI", "mongodb://127.0.0.1:9/",
                                "CREDEX_MONGO_TIMEOUT_MS", "300", NULL};
    st = alt_begin(&alt, dead);
    for (int i = 0; i < 200 && mdb_is_up(st->db); i++)
        usleep(10000);
    assert_false(mdb_is_up(st->db)); /* its prober found nothing listening */
    int64_t t0 = tk_mono_ms();
    audit_burst(st, N, "sec_AUD1TD0WN00000000000000000", ts);
    int64_t dt = tk_mono_ms() - t0;
    for (int i = 0; i < N; i++) {
        assert_false(ts[i].ok);
        assert_int_equal(ts[i].code, CX_ERR_UNAVAILABLE);
    }
    store_audit_batch_stats(st->audit, &s);
    printf("audit with the database down: %d events failed in %llu inserts, %lld ms\n", N,
           (unsigned long long)s.inserts, (long long)dt);
    assert_int_equal(s.events, N);
    assert_int_equal(s.failed, s.inserts);
    assert_true(dt < 1000); /* the database is known to be down: nothing waits for it */
    /* Resolves through that store fail too (no material without a record). */
    expect_resolve_fails("sec_00000000000000000000000000", CX_ERR_UNAVAILABLE);
    alt_end(&alt);
}

typedef struct doc_writer {
    store_audit_batch_t *b;
    const bson_t *doc;
    pthread_barrier_t *go;
    bool ok;
    cx_code_t code;
} doc_writer_t;

static void *doc_writer_run(void *arg)
{
    doc_writer_t *w = arg;
    cx_error_t err = {0};
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    assert_non_null(c);
    pthread_barrier_wait(w->go);
    w->ok = store_audit_batch_write(w->b, F.st->db, c, w->doc, &err);
    w->code = err.code;
    mdb_client_push(F.st->db, c);
    return NULL;
}

static int64_t count_resource(const char *resource_id)
{
    cx_error_t err;
    bson_error_t berr;
    mongoc_client_t *c = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, c, MDB_COLL_AUDIT_EVENTS);
    bson_t *f = BCON_NEW("resource_id", BCON_UTF8(resource_id));
    int64_t n = mongoc_collection_count_documents(col, f, NULL, NULL, NULL, &berr);
    bson_destroy(f);
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, c);
    return n;
}

/* One event that the driver (an empty key) or the database (a duplicate _id) refuses fails
 * alone: the events grouped with it are still written, each exactly once. */
static void test_audit_batch_isolation(void **state)
{
    (void)state;
    enum { N = 12, ROUNDS = 8 };
    store_audit_batch_t *b = store_audit_batch_new(64);
    store_audit_batch_stats_t s;
    bson_error_t berr;
    cx_error_t err;
    const char *res = "sec_AUD1TS0LAT10N000000000000";
    bson_t *dup = BCON_NEW("_id", BCON_UTF8("audit-isolation-dup"), "resource_id",
                           BCON_UTF8("sec_AUD1TS0LAT10NDUP0000000000"));
    mongoc_client_t *mc = mdb_client_pop(F.st->db, &err);
    mongoc_collection_t *col = mdb_collection(F.st->db, mc, MDB_COLL_AUDIT_EVENTS);
    assert_true(mongoc_collection_insert_one(col, dup, NULL, NULL, &berr));
    mongoc_collection_destroy(col);
    mdb_client_push(F.st->db, mc);
    int64_t good = 0;
    for (int phase = 0; phase < 2; phase++) {
        uint64_t isolated0;
        store_audit_batch_stats(b, &s);
        isolated0 = s.isolated;
        for (int round = 0; round < ROUNDS && s.isolated == isolated0; round++) {
            bson_t docs[N];
            doc_writer_t ws[N];
            pthread_t th[N];
            pthread_barrier_t go;
            pthread_barrier_init(&go, NULL, N);
            for (int i = 0; i < N; i++) {
                bson_init(&docs[i]);
                if (i == N / 2 && phase == 0) {
                    BSON_APPEND_UTF8(&docs[i], "", "empty keys are refused by the driver");
                } else if (i == N / 2) {
                    BSON_APPEND_UTF8(&docs[i], "_id", "audit-isolation-dup");
                }
                BSON_APPEND_UTF8(&docs[i], "resource_id", res);
                ws[i] = (doc_writer_t){.b = b, .doc = &docs[i], .go = &go};
                pthread_create(&th[i], NULL, doc_writer_run, &ws[i]);
            }
            for (int i = 0; i < N; i++) {
                pthread_join(th[i], NULL);
                if (i == N / 2) {
                    assert_false(ws[i].ok);
                    if (phase == 1)
                        assert_int_equal(ws[i].code, CX_ERR_CONFLICT);
                } else {
                    if (!ws[i].ok)
                        fail_msg("event %d grouped with a refused one failed: %s", i,
                                 cx_code_reason(ws[i].code));
                    good++;
                }
                bson_destroy(&docs[i]);
            }
            pthread_barrier_destroy(&go);
            assert_int_equal(count_resource(res), good);
            store_audit_batch_stats(b, &s);
        }
        printf("audit isolation (%s): %llu inserts, %llu isolated, largest %zu\n",
               phase == 0 ? "driver" : "database", (unsigned long long)s.inserts,
               (unsigned long long)s.isolated, s.largest);
        assert_true(s.isolated > isolated0); /* the refused event was grouped with others */
    }
    bson_destroy(dup);
    store_audit_batch_free(b);
}

/* ---- with the real keywrap process ------------------------------------------------------ */

static char kw_addr[64];
/* kw_pid (above) is killed by group_teardown if a failed assertion skipped the stop. */

static pid_t spawn_keywrap(const char *bin, int port)
{
    char e[9][700];
    char *envp[10];
    snprintf(e[0], sizeof(e[0]), "CREDEX_KEYWRAP_ADDR=127.0.0.1:%d", port);
    snprintf(e[1], sizeof(e[1]), "CREDEX_TLS_CA=%s", tk_pki_path("ca.pem"));
    snprintf(e[2], sizeof(e[2]), "CREDEX_TLS_CERT=%s", tk_pki_path("keywrap.pem"));
    snprintf(e[3], sizeof(e[3]), "CREDEX_TLS_KEY=%s", tk_pki_path("keywrap.key"));
    snprintf(e[4], sizeof(e[4]), "CREDEX_LOCAL_CMK_KEY_FILE=%s", tk_pki_path("local-cmk.key"));
    snprintf(e[5], sizeof(e[5]), "CAIPE_CREDENTIALS_ENABLED=true");
    snprintf(e[6], sizeof(e[6]), "CREDEX_LOG_LEVEL=warn");
    snprintf(e[7], sizeof(e[7]), "ASAN_OPTIONS=detect_leaks=0");
    /* No operations listener: its default port may be taken on a shared machine. */
    snprintf(e[8], sizeof(e[8]), "CREDEX_KEYWRAP_OPS_ADDR=off");
    for (int i = 0; i < 9; i++)
        envp[i] = e[i];
    envp[9] = NULL;
    char *argv[] = {(char *)bin, NULL};
    pid_t pid;
    assert_int_equal(posix_spawn(&pid, bin, NULL, NULL, argv, envp), 0);
    kw_pid = pid;
    for (int i = 0; i < 200 && !tk_port_open("127.0.0.1", port); i++)
        usleep(25000);
    assert_true(tk_port_open("127.0.0.1", port));
    return pid;
}

static void stop_process(pid_t pid)
{
    int status;
    kill(pid, SIGTERM);
    waitpid(pid, &status, 0);
    kw_pid = 0;
}

static const char *kw_getenv(void *ctx, const char *name)
{
    if (strcmp(name, "CREDEX_KEYWRAP_ADDR") == 0)
        return kw_addr;
    if (strcmp(name, "CREDEX_TLS_CA") == 0)
        return tk_pki_path("ca.pem");
    if (strcmp(name, "CREDEX_TLS_CERT") == 0)
        return tk_pki_path("store.pem");
    if (strcmp(name, "CREDEX_TLS_KEY") == 0)
        return tk_pki_path("store.key");
    if (strcmp(name, "CREDEX_DEK_CACHE_TTL_MS") == 0)
        return "0"; /* every Resolve goes to keywrap ... */
    if (strcmp(name, "CREDEX_PAYLOAD_CACHE_MAX_ENTRIES") == 0)
        return "0"; /* ... with the stored (tampered) wrapped key */
    return fx_getenv(ctx, name);
}

static void test_real_keywrap(void **state)
{
    (void)state;
    const char *bin = getenv("CREDEX_TEST_KEYWRAP_BIN");
    if (!bin || access(bin, X_OK) != 0)
        fail_msg("CREDEX_TEST_KEYWRAP_BIN is not an executable (ctest sets it to credex-keywrap)");
    cx_error_t err;
    int port = tk_free_port("127.0.0.1");
    snprintf(kw_addr, sizeof(kw_addr), "127.0.0.1:%d", port);
    pid_t pid = spawn_keywrap(bin, port);
    cx_config_t *cfg = NULL;
    assert_true(cx_config_load(&cfg, kw_getenv, NULL, &err));
    store_t *st = store_new(cfg, NULL, &err);
    if (!st)
        fail_msg("store_new: %s", err.message);
    rpc_server_set_context(F.srv, st);
    rpc_arena_t *a = rpc_arena_new(8192);

    Credex__V1__StoreCreateSecretResponse *c =
        create(F.gw, a, "alice", "real-kw-1", "K", "real-keywrap-value-1", &err);
    if (!c)
        fail_msg("create via keywrap: %s: %s", cx_code_reason(err.code), err.message);
    const char *id = c->secret->secret_id;
    expect_plain(id, "real-keywrap-value-1");

    /* keywrap authenticates the context and the wrapped key: tampering is integrity_error. */
    bson_t orig;
    uint8_t buf[256];
    uint32_t len = 0;
    payload_get(id, &orig);
    get_bin(&orig, "wrapped_key", buf, &len);
    buf[len - 1] ^= 1;
    payload_set_bin(id, "wrapped_key", buf, len);
    expect_resolve_fails(id, CX_ERR_INTEGRITY);
    buf[len - 1] ^= 1;
    payload_set_bin(id, "wrapped_key", buf, len);
    bson_destroy(&orig);
    expect_plain(id, "real-keywrap-value-1");
    /* (Tampering above touches every payload of the secret: done while there is one.) */
    assert_non_null(rotate(F.gw, a, id, 1, "real-keywrap-value-2", &err));
    expect_plain(id, "real-keywrap-value-2");

    /* keywrap down: unavailable within the deadline, never a value; back: served again. */
    stop_process(pid);
    int64_t t0 = tk_mono_ms();
    expect_resolve_fails(id, CX_ERR_UNAVAILABLE);
    assert_null(create(F.gw, a, "alice", "real-kw-2", "K", "v", &err));
    assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
    assert_true(tk_mono_ms() - t0 < 6000);
    pid = spawn_keywrap(bin, port);
    /* gRPC reconnects with backoff (1 s initial, x1.6): allow a few attempts. */
    bool back = false;
    int64_t t1 = tk_mono_ms();
    for (int i = 0; i < 300 && !back; i++) {
        rpc_arena_t *b = rpc_arena_new(4096);
        Credex__V1__StoreResolveResponse *r = resolve(F.gw, b, id, &err);
        back = r != NULL;
        rpc_arena_free(b);
        if (!back)
            usleep(100000);
    }
    if (!back)
        fail_msg("store did not resume after keywrap came back: %s: %s", cx_code_reason(err.code),
                 err.message);
    printf("keywrap back after %lld ms\n", (long long)(tk_mono_ms() - t1));
    expect_plain(id, "real-keywrap-value-2");
    stop_process(pid);

    rpc_arena_free(a);
    rpc_server_set_context(F.srv, F.st);
    store_free(st);
    cx_config_free(cfg);
}

int main(void)
{
    if (!getenv("CREDEX_TEST_PKI")) {
        fprintf(stderr, "CREDEX_TEST_PKI is not set (ctest's rpc_pki fixture)\n");
        return 1;
    }
    if (!tk_ferretdb_fixture_uri(mongo_uri, sizeof(mongo_uri)))
        return 1;
    snprintf(dbname, sizeof(dbname), "storetest_%d", (int)getpid());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_list_paging),
        cmocka_unit_test(test_tamper_and_swap),
        cmocka_unit_test(test_dek_cache),
        cmocka_unit_test(test_peers_and_policy),
        cmocka_unit_test(test_feature_disabled),
        cmocka_unit_test(test_concurrent_rotations),
        cmocka_unit_test(test_orphan_reclaim),
        cmocka_unit_test(test_keywrap_down),
        cmocka_unit_test(test_check_data_keys),
        cmocka_unit_test(test_database_down),
        cmocka_unit_test(test_audit_append_query),
        cmocka_unit_test(test_failure_audit_requests),
        cmocka_unit_test(test_failure_audit_states),
        cmocka_unit_test(test_tampered_metadata),
        cmocka_unit_test(test_payload_cache),
        cmocka_unit_test(test_payload_cache_ttl_and_size),
        cmocka_unit_test(test_payload_cache_retry),
        cmocka_unit_test(test_metadata_cache),
        cmocka_unit_test(test_audit_group_commit),
        cmocka_unit_test(test_audit_batch_one_and_down),
        cmocka_unit_test(test_audit_batch_isolation),
        cmocka_unit_test(test_rewrap_data_keys),
        cmocka_unit_test(test_real_keywrap),
    };
    int rc = cmocka_run_group_tests(tests, group_setup, group_teardown);
    mongoc_cleanup();
    return rc;
}
