/*
 * keywrap (local-cmk) through a real in-process server and clients over mutual TLS, with the
 * certificates and root key file of scripts/lib/pki.sh (ctest fixture keywrap_pki, into
 * $CREDEX_TEST_PKI). One keywrap per process: each test starts and stops its own server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/rpc/rpc.h"
#include "credex/v1/keywrap.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "services/keywrap/keywrap.h"
#include "tests/unit/kit/testkit.h"

static char tmpdir[600];

/* ---- fixture: a keywrap server ---------------------------------------------------------- */

typedef struct kw_server {
    cx_config_t *cfg;
    rpc_server_t *srv;
    void *state;
    char addr[64];
} kw_server_t;

static const char *no_env(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return NULL;
}

/* Copy a test string into a config field, failing the test (not truncating) when too long. */
static void set_field(char *dst, size_t dstsz, const char *src)
{
    size_t n = strlen(src);
    assert_true(n < dstsz);
    memcpy(dst, src, n + 1);
}

static cx_config_t *config_new(const char *cmk_id, const char *key_file, bool production)
{
    cx_config_t *cfg = NULL;
    cx_error_t err;
    assert_true(cx_config_load(&cfg, no_env, NULL, &err));
    set_field(cfg->kms_cmk_id, sizeof(cfg->kms_cmk_id), cmk_id);
    set_field(cfg->local_cmk_key_file, sizeof(cfg->local_cmk_key_file), key_file ? key_file : "");
    cfg->production = production;
    return cfg;
}

static rpc_server_t *server_new(void)
{
    cx_error_t err;
    rpc_server_options_t o = tk_server_options("keywrap");
    rpc_server_t *srv = rpc_server_new(&o, &err);
    assert_non_null(srv);
    return srv;
}

/* Start a keywrap server on cfg (taken) the way svc_main does: setup, context, start. */
static void kw_start_cfg(kw_server_t *s, cx_config_t *cfg, const char *name)
{
    cx_error_t err;
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    s->srv = server_new();
    if (!keywrap_setup_named(s->srv, s->cfg, name, &s->state, &err))
        fail_msg("keywrap_setup: %s", err.message);
    rpc_server_set_context(s->srv, s->state);
    assert_true(rpc_server_start(s->srv, &err));
    snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%d", rpc_server_port(s->srv));
}

static void kw_start(kw_server_t *s, const char *cmk_id, const char *key_file, bool production,
                     const char *name)
{
    kw_start_cfg(s, config_new(cmk_id, key_file, production), name);
}

static void kw_stop(kw_server_t *s)
{
    rpc_server_free(s->srv);
    keywrap_cleanup(s->state);
    cx_config_free(s->cfg);
    memset(s, 0, sizeof(*s));
}

static rpc_client_t *client_as(const kw_server_t *s, const char *who)
{
    return tk_client(s->addr, "keywrap", who);
}

/* ---- calls ------------------------------------------------------------------------------ */

typedef struct ctx {
    const char *k, *v;
} ctx_t;

static const ctx_t base_ctx[] = {{"secret_id", "sec_1"},
                                 {"version", "1"},
                                 {"owner_type", "user"},
                                 {"owner_id", "alice"},
                                 {"kind", "api_key"}};
#define NBASE (sizeof(base_ctx) / sizeof(base_ctx[0]))

/* Map entries in the arena; all three request types share the entry layout, built here as
 * GenerateDataKey entries and cast only through ProtobufCMessage packing (same wire format). */
static void **entries_new(rpc_arena_t *a, const ctx_t *c, size_t n,
                          const ProtobufCMessageDescriptor *d)
{
    void **e = rpc_arena_alloc(a, (n ? n : 1) * sizeof(void *));
    for (size_t i = 0; i < n; i++) {
        Credex__V1__UnwrapRequest__EncryptionContextEntry *x = rpc_arena_alloc(a, sizeof(*x));
        protobuf_c_message_init(d, x);
        x->key = (char *)c[i].k;
        x->value = (char *)c[i].v;
        e[i] = x;
    }
    return e;
}

static bool call_generate(rpc_client_t *c, const ctx_t *ctx, size_t n, rpc_arena_t *a,
                          Credex__V1__GenerateDataKeyResponse **out, cx_error_t *err)
{
    Credex__V1__GenerateDataKeyRequest req = CREDEX__V1__GENERATE_DATA_KEY_REQUEST__INIT;
    req.n_encryption_context = n;
    req.encryption_context =
        (Credex__V1__GenerateDataKeyRequest__EncryptionContextEntry **)entries_new(
            a, ctx, n,
            &credex__v1__generate_data_key_request__encryption_context_entry__descriptor);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t o = {.deadline_ms = 3000};
    bool ok = rpc_client_unary(c, &credex__v1__key_wrap__descriptor, "GenerateDataKey", &req.base,
                               &o, a, &reply, err);
    *out = (Credex__V1__GenerateDataKeyResponse *)reply;
    return ok;
}

static bool call_unwrap(rpc_client_t *c, const Credex__V1__WrappedKey *wk, const ctx_t *ctx,
                        size_t n, rpc_arena_t *a, Credex__V1__UnwrapResponse **out, cx_error_t *err)
{
    Credex__V1__UnwrapRequest req = CREDEX__V1__UNWRAP_REQUEST__INIT;
    req.wrapped_key = (Credex__V1__WrappedKey *)wk;
    req.n_encryption_context = n;
    req.encryption_context = (Credex__V1__UnwrapRequest__EncryptionContextEntry **)entries_new(
        a, ctx, n, &credex__v1__unwrap_request__encryption_context_entry__descriptor);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t o = {.deadline_ms = 3000};
    bool ok = rpc_client_unary(c, &credex__v1__key_wrap__descriptor, "Unwrap", &req.base, &o, a,
                               &reply, err);
    *out = (Credex__V1__UnwrapResponse *)reply;
    return ok;
}

static bool call_rewrap(rpc_client_t *c, const Credex__V1__WrappedKey *wk, const ctx_t *ctx,
                        size_t n, rpc_arena_t *a, Credex__V1__RewrapResponse **out, cx_error_t *err)
{
    Credex__V1__RewrapRequest req = CREDEX__V1__REWRAP_REQUEST__INIT;
    req.wrapped_key = (Credex__V1__WrappedKey *)wk;
    req.n_encryption_context = n;
    req.encryption_context = (Credex__V1__RewrapRequest__EncryptionContextEntry **)entries_new(
        a, ctx, n, &credex__v1__rewrap_request__encryption_context_entry__descriptor);
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t o = {.deadline_ms = 3000};
    bool ok = rpc_client_unary(c, &credex__v1__key_wrap__descriptor, "Rewrap", &req.base, &o, a,
                               &reply, err);
    *out = (Credex__V1__RewrapResponse *)reply;
    return ok;
}

static bool call_describe(rpc_client_t *c, rpc_arena_t *a, Credex__V1__DescribeResponse **out,
                          cx_error_t *err)
{
    Credex__V1__DescribeRequest req = CREDEX__V1__DESCRIBE_REQUEST__INIT;
    ProtobufCMessage *reply = NULL;
    rpc_call_options_t o = {.deadline_ms = 3000};
    bool ok = rpc_client_unary(c, &credex__v1__key_wrap__descriptor, "Describe", &req.base, &o, a,
                               &reply, err);
    *out = (Credex__V1__DescribeResponse *)reply;
    return ok;
}

static int health_of(rpc_client_t *c, const char *service)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    rpc_arena_t *a = rpc_arena_new(256);
    ProtobufCMessage *reply = NULL;
    cx_error_t err;
    rpc_call_options_t o = {.deadline_ms = 3000};
    assert_true(rpc_client_unary(c, &grpc__health__v1__health__descriptor, "Check", &req.base, &o,
                                 a, &reply, &err));
    int st = ((Grpc__Health__V1__HealthCheckResponse *)reply)->status;
    rpc_arena_free(a);
    return st;
}

/* A deep copy of a wrapped key into arena a (the reply's arena may be freed first). */
static Credex__V1__WrappedKey *wk_copy(rpc_arena_t *a, const Credex__V1__WrappedKey *wk)
{
    Credex__V1__WrappedKey *c = rpc_arena_alloc(a, sizeof(*c));
    credex__v1__wrapped_key__init(c);
    c->ciphertext.len = wk->ciphertext.len;
    c->ciphertext.data = rpc_arena_alloc(a, wk->ciphertext.len + 1);
    memcpy(c->ciphertext.data, wk->ciphertext.data, wk->ciphertext.len);
    c->key_provider = wk->key_provider;
    c->key_id = rpc_arena_strndup(a, wk->key_id, strlen(wk->key_id));
    c->key_version = rpc_arena_strndup(a, wk->key_version, strlen(wk->key_version));
    return c;
}

static void expect_unwrap_fails(rpc_client_t *c, const Credex__V1__WrappedKey *wk, const ctx_t *ctx,
                                size_t n, cx_code_t code)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    Credex__V1__UnwrapResponse *r = NULL;
    cx_error_t err;
    cx_error_clear(&err);
    assert_false(call_unwrap(c, wk, ctx, n, a, &r, &err));
    if (err.code != code)
        fail_msg("expected %s, got %s: %s", cx_code_reason(code), cx_code_reason(err.code),
                 err.message);
    rpc_arena_free(a);
}

/* A keywrap on root key_file (and no other) does not open wk: integrity_error. */
static void expect_root_refuses(const char *cmk_id, const char *key_file,
                                const Credex__V1__WrappedKey *wk)
{
    kw_server_t s;
    kw_start(&s, cmk_id, key_file, false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
    rpc_client_free(store);
    kw_stop(&s);
}

/* ---- key files -------------------------------------------------------------------------- */

static const char *write_key_file(const char *name, const char *content, mode_t mode)
{
    static char path[8][700];
    static int i;
    char *p = path[i++ % 8];
    snprintf(p, 700, "%s/%s", tmpdir, name);
    unlink(p);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    assert_int_equal(chmod(p, mode), 0);
    return p;
}

/* Key files every root file check refuses: group/others modes, and malformed content. */
static const mode_t open_modes[] = {0640, 0604, 0644, 0620, 0602, 0660};
#define NOPEN_MODES (sizeof(open_modes) / sizeof(open_modes[0]))
static const char *const bad_key_content[] = {
    "",
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n",    /* 63 */
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\n",  /* 65 */
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeegf\n",   /* not hex */
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n\n", /* 2 newlines */
    " 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\r\n",
    "0011223344556677",
};
#define NBAD_KEYS (sizeof(bad_key_content) / sizeof(bad_key_content[0]))

static const char *main_key(void)
{
    return tk_pki_path("local-cmk.key");
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_generate_unwrap_round_trip(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL, *g2 = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    assert_int_equal(g->plaintext_data_key.len, CX_AES_KEY_LEN);
    assert_non_null(g->wrapped_key);
    assert_int_equal(g->wrapped_key->ciphertext.len, KEYWRAP_BLOB_LEN);
    assert_int_equal(g->wrapped_key->ciphertext.data[0], KEYWRAP_FORMAT_V1);
    assert_int_equal(g->wrapped_key->key_provider,
                     CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(g->wrapped_key->key_id, "alias/test-a");
    assert_string_equal(g->wrapped_key->key_version, "1");
    /* The wrapped form does not contain the key. */
    assert_null(
        memmem(g->wrapped_key->ciphertext.data, KEYWRAP_BLOB_LEN, g->plaintext_data_key.data, 8));

    /* Same context in another order: same key back. */
    const ctx_t reordered[] = {base_ctx[4], base_ctx[2], base_ctx[0], base_ctx[3], base_ctx[1]};
    Credex__V1__UnwrapResponse *u = NULL;
    assert_true(call_unwrap(store, g->wrapped_key, reordered, NBASE, a, &u, &err));
    assert_int_equal(u->plaintext_data_key.len, CX_AES_KEY_LEN);
    assert_memory_equal(u->plaintext_data_key.data, g->plaintext_data_key.data, CX_AES_KEY_LEN);

    /* Fresh key and fresh nonce every time. */
    assert_true(call_generate(store, base_ctx, NBASE, a, &g2, &err));
    assert_memory_not_equal(g2->plaintext_data_key.data, g->plaintext_data_key.data,
                            CX_AES_KEY_LEN);
    assert_memory_not_equal(g2->wrapped_key->ciphertext.data + 1,
                            g->wrapped_key->ciphertext.data + 1, CX_GCM_NONCE_LEN);

    /* Describe, from store and from gateway. */
    Credex__V1__DescribeResponse *d = NULL;
    assert_true(call_describe(store, a, &d, &err));
    assert_int_equal(d->key_provider, CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(d->configured_name, "local-cmk");
    assert_string_equal(d->key_id, "alias/test-a");
    assert_string_equal(d->key_version, "1");
    assert_false(d->production_mode);
    assert_true(d->dev_key_mode);
    assert_true(d->healthy);
    assert_string_equal(d->reason, "");
    assert_true(d->checked_at_ms > 1700000000000LL);
    rpc_client_t *gw = client_as(&s, "gateway");
    assert_true(call_describe(gw, a, &d, &err));
    assert_true(d->healthy);
    assert_int_equal(health_of(gw, "credex.v1.KeyWrap"),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);

    rpc_arena_free(a);
    rpc_client_free(gw);
    rpc_client_free(store);
    kw_stop(&s);
}

static void test_context_mismatch_is_integrity_error(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));

    ctx_t changed[NBASE];
    memcpy(changed, base_ctx, sizeof(changed));
    changed[1].v = "2"; /* another version */
    expect_unwrap_fails(store, g->wrapped_key, changed, NBASE, CX_ERR_INTEGRITY);
    changed[1].v = "1 ";
    expect_unwrap_fails(store, g->wrapped_key, changed, NBASE, CX_ERR_INTEGRITY);
    /* A key renamed, value kept. */
    memcpy(changed, base_ctx, sizeof(changed));
    changed[3].k = "owner";
    expect_unwrap_fails(store, g->wrapped_key, changed, NBASE, CX_ERR_INTEGRITY);

    ctx_t added[NBASE + 1];
    memcpy(added, base_ctx, sizeof(base_ctx));
    added[NBASE] = (ctx_t){"tenant", "t1"};
    expect_unwrap_fails(store, g->wrapped_key, added, NBASE + 1, CX_ERR_INTEGRITY);
    expect_unwrap_fails(store, g->wrapped_key, base_ctx, NBASE - 1, CX_ERR_INTEGRITY); /* removed */
    /* Moving bytes between key and value of one pair. */
    memcpy(changed, base_ctx, sizeof(changed));
    changed[4] = (ctx_t){"kinda", "pi_key"};
    expect_unwrap_fails(store, g->wrapped_key, changed, NBASE, CX_ERR_INTEGRITY);
    /* Rewrap checks the context too. */
    Credex__V1__RewrapResponse *rw = NULL;
    changed[1].v = "2";
    assert_false(call_rewrap(store, g->wrapped_key, changed, NBASE, a, &rw, &err));
    assert_int_equal(err.code, CX_ERR_INTEGRITY);

    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);
}

static void test_tampered_wrapped_key(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL, *other = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    Credex__V1__WrappedKey *wk = g->wrapped_key;

    /* Every byte of the ciphertext (format, nonce, wrapped key, tag). */
    for (size_t i = 0; i < wk->ciphertext.len; i++) {
        wk->ciphertext.data[i] ^= 0x20;
        expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
        wk->ciphertext.data[i] ^= 0x20;
    }
    /* Truncated and extended. */
    wk->ciphertext.len--;
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
    Credex__V1__WrappedKey *longer = wk_copy(a, wk);
    longer->ciphertext.len = KEYWRAP_BLOB_LEN + 1;
    expect_unwrap_fails(store, longer, base_ctx, NBASE, CX_ERR_INTEGRITY);
    wk->ciphertext.len++;
    /* Another CMK id claimed for it: a different KEK and different associated data. */
    char *id = wk->key_id;
    wk->key_id = "alias/test-b";
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
    wk->key_id = "";
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INVALID_ARGUMENT);
    wk->key_id = id;
    /* Unknown version, another provider, no provider. */
    wk->key_version = "2";
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_NOT_FOUND);
    wk->key_version = "1";
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS;
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_FAILED_PRECONDITION);
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_UNSPECIFIED;
    expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INVALID_ARGUMENT);
    wk->key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    /* Swapped: another secret's wrapped key under this secret's context. */
    ctx_t other_ctx[NBASE];
    memcpy(other_ctx, base_ctx, sizeof(other_ctx));
    other_ctx[0].v = "sec_2";
    assert_true(call_generate(store, other_ctx, NBASE, a, &other, &err));
    expect_unwrap_fails(store, other->wrapped_key, base_ctx, NBASE, CX_ERR_INTEGRITY);
    /* No wrapped key at all. */
    expect_unwrap_fails(store, NULL, base_ctx, NBASE, CX_ERR_INVALID_ARGUMENT);
    /* Restored: unwraps again. */
    Credex__V1__UnwrapResponse *u = NULL;
    assert_true(call_unwrap(store, wk, base_ctx, NBASE, a, &u, &err));
    assert_memory_equal(u->plaintext_data_key.data, g->plaintext_data_key.data, CX_AES_KEY_LEN);

    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);
}

static void test_context_limits(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;

    assert_false(call_generate(store, NULL, 0, a, &g, &err)); /* empty */
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    ctx_t many[KEYWRAP_CONTEXT_MAX_PAIRS + 1];
    char keys[KEYWRAP_CONTEXT_MAX_PAIRS + 1][8];
    for (size_t i = 0; i <= KEYWRAP_CONTEXT_MAX_PAIRS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        many[i] = (ctx_t){keys[i], "v"};
    }
    assert_false(call_generate(store, many, KEYWRAP_CONTEXT_MAX_PAIRS + 1, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_true(call_generate(store, many, KEYWRAP_CONTEXT_MAX_PAIRS, a, &g, &err));

    char big[KEYWRAP_CONTEXT_MAX_VALUE + 2];
    memset(big, 'x', sizeof(big));
    big[KEYWRAP_CONTEXT_MAX_VALUE + 1] = '\0';
    ctx_t one[] = {{"secret_id", big}};
    assert_false(call_generate(store, one, 1, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    big[KEYWRAP_CONTEXT_MAX_VALUE] = '\0';
    assert_true(call_generate(store, one, 1, a, &g, &err));
    big[KEYWRAP_CONTEXT_MAX_KEY + 1] = '\0';
    one[0] = (ctx_t){big, "v"};
    assert_false(call_generate(store, one, 1, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    one[0] = (ctx_t){"", "v"};
    assert_false(call_generate(store, one, 1, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    /* A map key sent twice on the wire. */
    const ctx_t dup[] = {{"secret_id", "a"}, {"secret_id", "b"}};
    assert_false(call_generate(store, dup, 2, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(err.message, "secret_id")); /* names limits, not values */

    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);
}

static void test_other_peers_denied(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_client_t *cli = client_as(&s, "credexctl");
    rpc_client_t *gw = client_as(&s, "gateway");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    Credex__V1__UnwrapResponse *u = NULL;
    Credex__V1__RewrapResponse *rw = NULL;
    Credex__V1__DescribeResponse *d = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    Credex__V1__WrappedKey *wk = g->wrapped_key;

    rpc_client_t *denied[] = {cli, gw};
    for (size_t i = 0; i < 2; i++) {
        Credex__V1__GenerateDataKeyResponse *g2 = NULL;
        assert_false(call_generate(denied[i], base_ctx, NBASE, a, &g2, &err));
        assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
        assert_false(call_unwrap(denied[i], wk, base_ctx, NBASE, a, &u, &err));
        assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
        assert_false(call_rewrap(denied[i], wk, base_ctx, NBASE, a, &rw, &err));
        assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    }
    /* Describe: store and gateway only. */
    assert_false(call_describe(cli, a, &d, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    assert_true(call_describe(gw, a, &d, &err));

    rpc_arena_free(a);
    rpc_client_free(gw);
    rpc_client_free(cli);
    rpc_client_free(store);
    kw_stop(&s);
}

static void test_rewrap_under_new_cmk(void **state)
{
    (void)state;
    kw_server_t s;
    rpc_arena_t *keep = rpc_arena_new(4096);
    cx_error_t err;
    unsigned char dek[CX_AES_KEY_LEN];

    /* Wrapped under CMK A. */
    kw_start(&s, "alias/cmk-a", main_key(), false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    memcpy(dek, g->plaintext_data_key.data, sizeof(dek));
    Credex__V1__WrappedKey *old = wk_copy(keep, g->wrapped_key);
    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);

    /* The CMK id changes (same root key): rewrap moves the key to CMK B. */
    kw_start(&s, "alias/cmk-b", main_key(), false, "dev-local");
    store = client_as(&s, "store");
    a = rpc_arena_new(4096);
    Credex__V1__RewrapResponse *rw = NULL;
    assert_true(call_rewrap(store, old, base_ctx, NBASE, a, &rw, &err));
    assert_string_equal(rw->wrapped_key->key_id, "alias/cmk-b");
    assert_string_equal(rw->wrapped_key->key_version, "1");
    assert_memory_not_equal(rw->wrapped_key->ciphertext.data, old->ciphertext.data,
                            KEYWRAP_BLOB_LEN);
    Credex__V1__UnwrapResponse *u = NULL;
    assert_true(call_unwrap(store, rw->wrapped_key, base_ctx, NBASE, a, &u, &err));
    assert_memory_equal(u->plaintext_data_key.data, dek, sizeof(dek));
    /* The old wrapped key still unwraps (stored payloads are rewrapped lazily). */
    assert_true(call_unwrap(store, old, base_ctx, NBASE, a, &u, &err));
    assert_memory_equal(u->plaintext_data_key.data, dek, sizeof(dek));
    /* The new one claims CMK A in vain. */
    rw->wrapped_key->key_id = "alias/cmk-a";
    expect_unwrap_fails(store, rw->wrapped_key, base_ctx, NBASE, CX_ERR_INTEGRITY);
    Credex__V1__DescribeResponse *d = NULL;
    assert_true(call_describe(store, a, &d, &err));
    assert_string_equal(d->configured_name, "dev-local");
    assert_string_equal(d->key_id, "alias/cmk-b");
    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);

    /* Another root key: nothing wrapped under the first one opens. */
    const char *other = write_key_file(
        "other.key", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", 0600);
    expect_root_refuses("alias/cmk-a", other, old);
    cx_crypto_wipe(dek, sizeof(dek));
    rpc_arena_free(keep);
}

static void test_production_mode_refuses(void **state)
{
    (void)state;
    kw_server_t s;
    kw_start(&s, "alias/test-a", main_key(), true, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_client_t *gw = client_as(&s, "gateway");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    assert_false(call_generate(store, base_ctx, NBASE, a, &g, &err));
    assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
    assert_non_null(strstr(err.message, "CREDEX_PRODUCTION=true"));
    assert_non_null(strstr(err.message, "aws-kms"));
    Credex__V1__WrappedKey wk = CREDEX__V1__WRAPPED_KEY__INIT;
    unsigned char blob[KEYWRAP_BLOB_LEN] = {KEYWRAP_FORMAT_V1};
    wk.ciphertext.data = blob;
    wk.ciphertext.len = sizeof(blob);
    wk.key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    wk.key_id = "alias/test-a";
    wk.key_version = "1";
    expect_unwrap_fails(store, &wk, base_ctx, NBASE, CX_ERR_FAILED_PRECONDITION);
    Credex__V1__RewrapResponse *rw = NULL;
    assert_false(call_rewrap(store, &wk, base_ctx, NBASE, a, &rw, &err));
    assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);

    Credex__V1__DescribeResponse *d = NULL;
    assert_true(call_describe(gw, a, &d, &err));
    assert_false(d->healthy);
    assert_true(d->production_mode);
    assert_true(d->dev_key_mode);
    assert_string_equal(d->reason, "failed_precondition");
    assert_non_null(strstr(d->detail, "refused in production mode"));
    assert_int_equal(health_of(gw, "credex.v1.KeyWrap"),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    assert_int_equal(health_of(gw, ""),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);

    rpc_arena_free(a);
    rpc_client_free(gw);
    rpc_client_free(store);
    kw_stop(&s);
}

/* Setup must fail, with a message naming `needle`, and never quoting key material. */
static void expect_setup_fails(cx_config_t *cfg, const char *needle)
{
    cx_error_t err;
    void *st = (void *)&err;
    rpc_server_t *srv = server_new();
    cx_error_clear(&err);
    assert_false(keywrap_setup_named(srv, cfg, NULL, &st, &err));
    assert_null(st);
    if (strstr(err.message, needle) == NULL)
        fail_msg("message \"%s\" lacks \"%s\"", err.message, needle);
    assert_null(strstr(err.message, "0011223344"));
    assert_null(strstr(err.message, "aabbccdd"));
    rpc_server_free(srv);
    cx_config_free(cfg);
}

static void test_bad_key_files_refuse_to_start(void **state)
{
    (void)state;
    const char *good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    for (size_t i = 0; i < NOPEN_MODES; i++) {
        const char *p = write_key_file("open.key", good, open_modes[i]);
        expect_setup_fails(config_new("alias/x", p, false), "CREDEX_LOCAL_CMK_KEY_FILE");
        expect_setup_fails(config_new("alias/x", p, false), "group or others");
    }
    expect_setup_fails(config_new("alias/x", NULL, false), "CREDEX_LOCAL_CMK_KEY_FILE is not set");
    expect_setup_fails(config_new("alias/x", "/nonexistent/credex/cmk.key", false),
                       "CREDEX_LOCAL_CMK_KEY_FILE: cannot open");
    expect_setup_fails(config_new("alias/x", tmpdir, false), "not a regular file");
    for (size_t i = 0; i < NBAD_KEYS; i++) {
        const char *p = write_key_file("bad.key", bad_key_content[i], 0600);
        expect_setup_fails(config_new("alias/x", p, false), "exactly 32 bytes as 64 hex digits");
    }
    /* Accepted: no newline, upper case, 0400. */
    const char *ok[] = {"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                        "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF\n"};
    for (size_t i = 0; i < 2; i++) {
        kw_server_t s;
        kw_start(&s, "alias/x", write_key_file("ok.key", ok[i], i == 0 ? 0600 : 0400), false, NULL);
        kw_stop(&s);
    }
}

static void aws_env_clear(void)
{
    static const char *const vars[] = {"AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY",
                                       "AWS_SESSION_TOKEN",           "AWS_ROLE_ARN",
                                       "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_SESSION_NAME"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

/* Static AWS keys for start-up checks: random for each test run, so that nothing shaped like a
 * credential is written in the repository (nothing is ever sent to AWS with them). */
static void aws_env_static_keys(bool with_id, bool with_secret)
{
    unsigned char raw[16];
    char hex[2 * sizeof(raw) + 1];
    cx_error_t err;
    assert_true(cx_crypto_random(raw, sizeof(raw), &err));
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    if (with_id)
        setenv("AWS_ACCESS_KEY_ID", hex + 16, 1);
    if (with_secret)
        setenv("AWS_SECRET_ACCESS_KEY", hex, 1);
}

static cx_config_t *aws_config(const char *region)
{
    cx_config_t *cfg = config_new("arn:aws:kms:us-west-2:123456789012:key/x", NULL, true);
    cfg->key_provider = CX_KEY_PROVIDER_AWS_KMS;
    set_field(cfg->kms_region, sizeof(cfg->kms_region), region);
    return cfg;
}

/* aws-kms refuses to start, naming the variables, when its settings cannot work; never a
 * silent fallback to local-cmk (no key file is configured here), and never a credential value
 * in the message. */
static void test_aws_kms_refuses_to_start_without_settings(void **state)
{
    (void)state;
    aws_env_clear();
    aws_env_static_keys(true, true);
    expect_setup_fails(aws_config(""), "CREDENTIAL_KMS_REGION must be set for aws-kms");
    expect_setup_fails(aws_config("Not A Region"), "CREDENTIAL_KMS_REGION");
    cx_config_t *cfg = aws_config("us-west-2");
    set_field(cfg->kms_cmk_id, sizeof(cfg->kms_cmk_id), "");
    expect_setup_fails(cfg, "CREDENTIAL_KMS_CMK_ID must be set for aws-kms");
    aws_env_clear();
    expect_setup_fails(aws_config("us-west-2"),
                       "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and "
                       "AWS_SESSION_TOKEN for temporary keys), or AWS_ROLE_ARN and "
                       "AWS_WEB_IDENTITY_TOKEN_FILE");
    aws_env_static_keys(false, true);
    expect_setup_fails(aws_config("us-west-2"),
                       "AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID (both or neither)");
    aws_env_clear();
    setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/credex", 1);
    expect_setup_fails(aws_config("us-west-2"), "or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE");
    setenv("AWS_WEB_IDENTITY_TOKEN_FILE", "/nonexistent/credex/token", 1);
    expect_setup_fails(aws_config("us-west-2"),
                       "AWS_WEB_IDENTITY_TOKEN_FILE: cannot read /nonexistent/credex/token");
    aws_env_clear();
    /* With static credentials it starts (nothing is sent to AWS at start-up). */
    aws_env_static_keys(true, true);
    cfg = aws_config("us-west-2");
    rpc_server_t *srv = server_new();
    void *st = NULL;
    cx_error_t err;
    assert_true(keywrap_setup_named(srv, cfg, NULL, &st, &err));
    assert_non_null(st);
    keywrap_cleanup(st);
    rpc_server_free(srv);
    cx_config_free(cfg);
    aws_env_clear();
}

/* ---- a retired local-cmk root (CMK rotation) ------------------------------------------- */

#define OLD_ROOT   "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\n"
#define THIRD_ROOT "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3\n"

static cx_config_t *retired_config(const char *cmk_id, const char *retired)
{
    cx_config_t *cfg = config_new(cmk_id, main_key(), false);
    set_field(cfg->local_cmk_retired_key_file, sizeof(cfg->local_cmk_retired_key_file),
              retired != NULL ? retired : "");
    return cfg;
}

/* A data key generated by a local-cmk keywrap on root key_file and CMK cmk_id: its wrapped form
 * (in keep) and the key itself (into dek). */
static Credex__V1__WrappedKey *wrapped_under(rpc_arena_t *keep, const char *cmk_id,
                                             const char *key_file, unsigned char *dek)
{
    kw_server_t s;
    kw_start(&s, cmk_id, key_file, false, NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    memcpy(dek, g->plaintext_data_key.data, CX_AES_KEY_LEN);
    Credex__V1__WrappedKey *wk = wk_copy(keep, g->wrapped_key);
    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);
    return wk;
}

static void expect_unwraps_to(rpc_client_t *c, const Credex__V1__WrappedKey *wk,
                              const unsigned char *dek)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    Credex__V1__UnwrapResponse *u = NULL;
    cx_error_t err;
    if (!call_unwrap(c, wk, base_ctx, NBASE, a, &u, &err))
        fail_msg("unwrap: %s: %s", cx_code_reason(err.code), err.message);
    assert_int_equal(u->plaintext_data_key.len, CX_AES_KEY_LEN);
    assert_memory_equal(u->plaintext_data_key.data, dek, CX_AES_KEY_LEN);
    rpc_arena_free(a);
}

static bool describe_retired(rpc_client_t *c)
{
    rpc_arena_t *a = rpc_arena_new(1024);
    Credex__V1__DescribeResponse *d = NULL;
    cx_error_t err;
    assert_true(call_describe(c, a, &d, &err));
    bool retired = d->retired_local_cmk;
    rpc_arena_free(a);
    return retired;
}

/* local-cmk on a new root file with the old one retired: keys of the old root (any CMK id)
 * still unwrap, Rewrap moves them under the current root and CMK id, and once the retired file
 * is gone the moved keys open while the unmoved ones do not. */
static void test_retired_root_unwraps_and_rewraps_to_current(void **state)
{
    (void)state;
    rpc_arena_t *keep = rpc_arena_new(4096);
    unsigned char dek_old[CX_AES_KEY_LEN], dek_cur[CX_AES_KEY_LEN];
    const char *old_root = write_key_file("old-root.key", OLD_ROOT, 0400);
    Credex__V1__WrappedKey *old = wrapped_under(keep, "alias/cmk-a", old_root, dek_old);
    Credex__V1__WrappedKey *cur = wrapped_under(keep, "alias/cmk-a", main_key(), dek_cur);
    Credex__V1__WrappedKey *moved = NULL, *moved_cur = NULL;
    cx_error_t err;

    kw_server_t s;
    kw_start_cfg(&s, retired_config("alias/cmk-b", old_root), NULL);
    rpc_client_t *store = client_as(&s, "store");
    assert_true(describe_retired(store));
    expect_unwraps_to(store, old, dek_old);
    expect_unwraps_to(store, cur, dek_cur);
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__RewrapResponse *rw = NULL;
    assert_true(call_rewrap(store, old, base_ctx, NBASE, a, &rw, &err));
    assert_int_equal(rw->wrapped_key->key_provider,
                     CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(rw->wrapped_key->key_id, "alias/cmk-b");
    assert_string_equal(rw->wrapped_key->key_version, "1");
    assert_int_equal(rw->wrapped_key->ciphertext.len, KEYWRAP_BLOB_LEN);
    moved = wk_copy(keep, rw->wrapped_key);
    assert_true(call_rewrap(store, cur, base_ctx, NBASE, a, &rw, &err));
    assert_string_equal(rw->wrapped_key->key_id, "alias/cmk-b");
    moved_cur = wk_copy(keep, rw->wrapped_key);
    /* New keys are wrapped under the current root only. */
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    assert_true(call_generate(store, base_ctx, NBASE, a, &g, &err));
    Credex__V1__WrappedKey *fresh = wk_copy(keep, g->wrapped_key);
    unsigned char dek_fresh[CX_AES_KEY_LEN];
    memcpy(dek_fresh, g->plaintext_data_key.data, sizeof(dek_fresh));
    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);

    /* The retired file removed: what moved opens, what did not is integrity_error. */
    kw_start(&s, "alias/cmk-b", main_key(), false, NULL);
    store = client_as(&s, "store");
    assert_false(describe_retired(store));
    expect_unwraps_to(store, moved, dek_old);
    expect_unwraps_to(store, moved_cur, dek_cur);
    expect_unwraps_to(store, fresh, dek_fresh);
    expect_unwrap_fails(store, old, base_ctx, NBASE, CX_ERR_INTEGRITY);
    rpc_client_free(store);
    kw_stop(&s);

    /* And the moved key is under the current root, not the retired one. */
    expect_root_refuses("alias/cmk-b", old_root, moved);
    cx_crypto_wipe(dek_old, sizeof(dek_old));
    cx_crypto_wipe(dek_cur, sizeof(dek_cur));
    cx_crypto_wipe(dek_fresh, sizeof(dek_fresh));
    rpc_arena_free(keep);
}

/* Two roots to try do not weaken authentication: any changed byte, CMK id or context, or a key
 * of a third root, is still integrity_error, for Unwrap and Rewrap. */
static void test_retired_root_tamper_is_integrity_error(void **state)
{
    (void)state;
    rpc_arena_t *keep = rpc_arena_new(4096);
    unsigned char dek_old[CX_AES_KEY_LEN], dek_cur[CX_AES_KEY_LEN], dek_third[CX_AES_KEY_LEN];
    const char *old_root = write_key_file("old-root.key", OLD_ROOT, 0600);
    Credex__V1__WrappedKey *third = wrapped_under(
        keep, "alias/cmk-a", write_key_file("third.key", THIRD_ROOT, 0600), dek_third);
    Credex__V1__WrappedKey *old = wrapped_under(keep, "alias/cmk-a", old_root, dek_old);
    Credex__V1__WrappedKey *cur = wrapped_under(keep, "alias/cmk-a", main_key(), dek_cur);

    kw_server_t s;
    kw_start_cfg(&s, retired_config("alias/cmk-b", old_root), NULL);
    rpc_client_t *store = client_as(&s, "store");
    rpc_arena_t *a = rpc_arena_new(4096);
    Credex__V1__RewrapResponse *rw = NULL;
    cx_error_t err;
    Credex__V1__WrappedKey *keys[] = {old, cur};
    for (size_t k = 0; k < 2; k++) {
        Credex__V1__WrappedKey *wk = keys[k];
        for (size_t i = 0; i < wk->ciphertext.len; i++) {
            wk->ciphertext.data[i] ^= 0x01;
            expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
            wk->ciphertext.data[i] ^= 0x01;
        }
        wk->ciphertext.data[20] ^= 0x80;
        assert_false(call_rewrap(store, wk, base_ctx, NBASE, a, &rw, &err));
        assert_int_equal(err.code, CX_ERR_INTEGRITY);
        wk->ciphertext.data[20] ^= 0x80;
        wk->key_id = "alias/cmk-b";
        expect_unwrap_fails(store, wk, base_ctx, NBASE, CX_ERR_INTEGRITY);
        wk->key_id = "alias/cmk-a";
        ctx_t changed[NBASE];
        memcpy(changed, base_ctx, sizeof(changed));
        changed[0].v = "sec_2";
        expect_unwrap_fails(store, wk, changed, NBASE, CX_ERR_INTEGRITY);
        assert_false(call_rewrap(store, wk, changed, NBASE, a, &rw, &err));
        assert_int_equal(err.code, CX_ERR_INTEGRITY);
        assert_null(strstr(err.message, "sec_2"));
    }
    expect_unwrap_fails(store, third, base_ctx, NBASE, CX_ERR_INTEGRITY);
    assert_false(call_rewrap(store, third, base_ctx, NBASE, a, &rw, &err));
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    /* A version neither root has, and a malformed key id, are not integrity questions. */
    old->key_version = "2";
    expect_unwrap_fails(store, old, base_ctx, NBASE, CX_ERR_NOT_FOUND);
    old->key_version = "1";
    /* Restored: both open. */
    expect_unwraps_to(store, old, dek_old);
    expect_unwraps_to(store, cur, dek_cur);
    rpc_arena_free(a);
    rpc_client_free(store);
    kw_stop(&s);
    cx_crypto_wipe(dek_old, sizeof(dek_old));
    cx_crypto_wipe(dek_cur, sizeof(dek_cur));
    cx_crypto_wipe(dek_third, sizeof(dek_third));
    rpc_arena_free(keep);
}

/* The retired root file gets the current one's checks, messages naming its own variable and
 * the path. */
static void expect_retired_refused(const char *path, const char *needle)
{
    const char *needles[] = {needle, "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE: ", path};
    for (size_t i = 0; i < 3; i++)
        expect_setup_fails(retired_config("alias/x", path), needles[i]);
}

static void test_retired_key_file_checks(void **state)
{
    (void)state;
    const char *good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    for (size_t i = 0; i < NOPEN_MODES; i++)
        expect_retired_refused(write_key_file("open.key", good, open_modes[i]), "group or others");
    expect_retired_refused("/nonexistent/credex/old.key", "cannot open");
    expect_retired_refused(tmpdir, "not a regular file");
    for (size_t i = 0; i < NBAD_KEYS; i++)
        expect_retired_refused(write_key_file("bad.key", bad_key_content[i], 0600),
                               "exactly 32 bytes as 64 hex digits");

    /* The current root again, by its own path or a copy in capitals: refused, without
     * quoting it. */
    char hex[80] = {0};
    FILE *f = fopen(main_key(), "r");
    assert_non_null(f);
    assert_non_null(fgets(hex, sizeof(hex), f));
    fclose(f);
    for (char *c = hex; *c; c++)
        *c = (char)(*c >= 'a' && *c <= 'f' ? *c - 'a' + 'A' : *c);
    const char *copies[] = {main_key(), write_key_file("copy.key", hex, 0600)};
    for (size_t i = 0; i < 2; i++) {
        cx_config_t *cfg = retired_config("alias/x", copies[i]);
        rpc_server_t *srv = server_new();
        void *st = NULL;
        cx_error_t err;
        assert_false(keywrap_setup_named(srv, cfg, NULL, &st, &err));
        assert_null(st);
        assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
        assert_non_null(strstr(err.message, "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE"));
        assert_non_null(strstr(err.message, "same key as CREDEX_LOCAL_CMK_KEY_FILE"));
        hex[16] = '\0';
        assert_null(strcasestr(err.message, hex));
        rpc_server_free(srv);
        cx_config_free(cfg);
    }
    /* Another root, mode 0400: accepted. */
    kw_server_t s;
    kw_start_cfg(&s, retired_config("alias/x", write_key_file("old-ok.key", OLD_ROOT, 0400)), NULL);
    kw_stop(&s);
}

/* aws-kms with a retired local-cmk root: the way off local-cmk. Local keys unwrap without
 * KMS; Rewrap must go to KMS Encrypt (here an address where nothing listens: unavailable, never
 * a local wrap); new keys never come from the local root. Without the retired root a local key
 * is failed_precondition naming the variable. Production mode allows it. */
static void test_aws_kms_reads_local_keys_only_with_the_retired_root(void **state)
{
    (void)state;
    rpc_arena_t *keep = rpc_arena_new(4096);
    unsigned char dek[CX_AES_KEY_LEN];
    const char *old_root = write_key_file("old-root.key", OLD_ROOT, 0600);
    Credex__V1__WrappedKey *old = wrapped_under(keep, "alias/credex-local", old_root, dek);
    aws_env_clear();
    aws_env_static_keys(true, true);

    for (int with_retired = 0; with_retired < 2; with_retired++) {
        cx_config_t *cfg = aws_config("us-west-2"); /* production mode */
        set_field(cfg->kms_endpoint, sizeof(cfg->kms_endpoint), "http://127.0.0.1:1");
        set_field(cfg->local_cmk_key_file, sizeof(cfg->local_cmk_key_file), main_key());
        if (with_retired)
            set_field(cfg->local_cmk_retired_key_file, sizeof(cfg->local_cmk_retired_key_file),
                      old_root);
        kw_server_t s;
        kw_start_cfg(&s, cfg, NULL);
        rpc_client_t *store = client_as(&s, "store");
        rpc_arena_t *a = rpc_arena_new(4096);
        Credex__V1__RewrapResponse *rw = NULL;
        Credex__V1__UnwrapResponse *u = NULL;
        Credex__V1__GenerateDataKeyResponse *g = NULL;
        cx_error_t err;
        if (!with_retired) {
            assert_false(call_unwrap(store, old, base_ctx, NBASE, a, &u, &err));
            assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
            assert_non_null(strstr(err.message, "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE"));
            assert_false(call_rewrap(store, old, base_ctx, NBASE, a, &rw, &err));
            assert_int_equal(err.code, CX_ERR_FAILED_PRECONDITION);
        } else {
            expect_unwraps_to(store, old, dek);
            old->ciphertext.data[30] ^= 0x04;
            expect_unwrap_fails(store, old, base_ctx, NBASE, CX_ERR_INTEGRITY);
            assert_false(call_rewrap(store, old, base_ctx, NBASE, a, &rw, &err));
            assert_int_equal(err.code, CX_ERR_INTEGRITY);
            old->ciphertext.data[30] ^= 0x04;
            assert_false(call_rewrap(store, old, base_ctx, NBASE, a, &rw, &err));
            assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
            assert_non_null(strstr(err.message, "KMS Encrypt"));
        }
        assert_false(call_generate(store, base_ctx, NBASE, a, &g, &err));
        assert_int_equal(err.code, CX_ERR_UNAVAILABLE);
        Credex__V1__DescribeResponse *d = NULL;
        assert_true(call_describe(store, a, &d, &err));
        assert_int_equal(d->key_provider, CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_AWS_KMS);
        assert_int_equal(d->retired_local_cmk, with_retired);
        rpc_arena_free(a);
        rpc_client_free(store);
        kw_stop(&s);
    }
    /* A retired file aws-kms cannot use refuses to start, naming it. */
    cx_config_t *cfg = aws_config("us-west-2");
    set_field(cfg->local_cmk_retired_key_file, sizeof(cfg->local_cmk_retired_key_file),
              write_key_file("open.key", OLD_ROOT, 0640));
    expect_setup_fails(cfg, "CREDEX_LOCAL_CMK_RETIRED_KEY_FILE");
    aws_env_clear();
    cx_crypto_wipe(dek, sizeof(dek));
    rpc_arena_free(keep);
}

/* Each server carries its own keywrap state (rpc_call_context): two in one process with
 * different root keys never answer with each other's key. */
static void test_two_keywraps_in_one_process(void **state)
{
    (void)state;
    kw_server_t a, b;
    kw_start(&a, "alias/test-a", main_key(), false, NULL);
    kw_start(&b, "alias/test-a",
             write_key_file("other.key",
                            "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100\n",
                            0600),
             false, NULL);
    rpc_client_t *ca = client_as(&a, "store"), *cb = client_as(&b, "store");
    rpc_arena_t *ar = rpc_arena_new(4096);
    cx_error_t err;
    Credex__V1__GenerateDataKeyResponse *g = NULL;
    Credex__V1__UnwrapResponse *u = NULL;
    assert_true(call_generate(ca, base_ctx, NBASE, ar, &g, &err));
    assert_true(call_unwrap(ca, g->wrapped_key, base_ctx, NBASE, ar, &u, &err));
    expect_unwrap_fails(cb, g->wrapped_key, base_ctx, NBASE, CX_ERR_INTEGRITY);
    rpc_arena_free(ar);
    rpc_client_free(ca);
    rpc_client_free(cb);
    kw_stop(&b);
    kw_stop(&a);
    keywrap_cleanup(NULL);
}

/* ---- the wire helpers directly ---------------------------------------------------------- */

static void test_blob_and_aad(void **state)
{
    (void)state;
    unsigned char blob[KEYWRAP_BLOB_LEN] = {KEYWRAP_FORMAT_V1};
    keywrap_blob_t b = {0};
    cx_error_t err;
    assert_true(keywrap_blob_parse(blob, sizeof(blob), &b, &err));
    assert_ptr_equal(b.nonce, blob + 1);
    assert_ptr_equal(b.ct, blob + 13);
    assert_ptr_equal(b.tag, blob + 45);
    blob[0] = 2;
    assert_false(keywrap_blob_parse(blob, sizeof(blob), &b, &err));
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    assert_false(keywrap_blob_parse(blob, 0, &b, &err));
    assert_false(keywrap_blob_parse(NULL, 61, &b, &err));

    const cx_kv_t ctx[] = {{"b", "2"}, {"a", "1"}};
    unsigned char *aad = NULL;
    size_t len = 0;
    assert_true(keywrap_context_aad(ctx, 2, "k", &aad, &len, &err));
    static const unsigned char want[] = "credex-keywrap-v1"
                                        "\0\0\0\1a\0\0\0\0011"
                                        "\0\0\0\1b\0\0\0\0012"
                                        "\0\0\0\1k";
    assert_int_equal(len, sizeof(want) - 1);
    assert_memory_equal(aad, want, len);
    free(aad);
    assert_false(keywrap_context_aad(ctx, 2, "", &aad, &len, &err));
    assert_false(keywrap_context_aad(ctx, 2, NULL, &aad, &len, &err));
    assert_false(keywrap_context_aad(ctx, 0, "k", &aad, &len, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
}

static int group_setup(void **state)
{
    (void)state;
    const char *dir = getenv("CREDEX_TEST_PKI");
    if (dir == NULL) {
        fprintf(stderr, "CREDEX_TEST_PKI is not set (run through ctest)\n");
        return -1;
    }
    snprintf(tmpdir, sizeof(tmpdir), "%s/../keyfiles", dir);
    mkdir(tmpdir, 0700);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blob_and_aad),
        cmocka_unit_test(test_generate_unwrap_round_trip),
        cmocka_unit_test(test_context_mismatch_is_integrity_error),
        cmocka_unit_test(test_tampered_wrapped_key),
        cmocka_unit_test(test_context_limits),
        cmocka_unit_test(test_other_peers_denied),
        cmocka_unit_test(test_rewrap_under_new_cmk),
        cmocka_unit_test(test_production_mode_refuses),
        cmocka_unit_test(test_bad_key_files_refuse_to_start),
        cmocka_unit_test(test_aws_kms_refuses_to_start_without_settings),
        cmocka_unit_test(test_two_keywraps_in_one_process),
        cmocka_unit_test(test_retired_root_unwraps_and_rewraps_to_current),
        cmocka_unit_test(test_retired_root_tamper_is_integrity_error),
        cmocka_unit_test(test_retired_key_file_checks),
        cmocka_unit_test(test_aws_kms_reads_local_keys_only_with_the_retired_root),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
