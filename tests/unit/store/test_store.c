/*
 * Unit tests of the store's pure parts: secret id derivation, envelope seal/open with a fake
 * data key and the AAD binding (swapping any bound field fails), stored payload decoding,
 * DEK and payload cache bounds, request validation and the per-peer kind policy, the strict
 * decoder of stored secret metadata (every kind of tampering is integrity_error), paging
 * cursors, audit documents.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/contract/cx_contract.h"
#include "services/store/store_internal.h"

/* ---- ids -------------------------------------------------------------------------------- */

static void test_secret_id_derivation(void **state)
{
    (void)state;
    char a[STORE_ID_BUF], b[STORE_ID_BUF];
    store_secret_id_derive("user", "alice", "key-1", a);
    /* Reference: python3 hashlib.sha256(b"user|alice|key-1"), first 130 bits, Crockford. */
    assert_string_equal(a, "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H");
    store_secret_id_derive("user", "alice", "key-1", b);
    assert_string_equal(a, b);
    assert_true(store_id_valid(a, "sec_"));
    store_secret_id_derive("team", "alice", "key-1", b);
    assert_string_not_equal(a, b);
    store_secret_id_derive("user", "alice", "key-2", b);
    assert_string_not_equal(a, b);
    store_secret_id_derive("user", "bob", "key-1", b);
    assert_string_not_equal(a, b);

    char r1[STORE_ID_BUF], r2[STORE_ID_BUF];
    cx_error_t err;
    assert_true(store_random_id("pay_", r1, &err));
    assert_true(store_random_id("pay_", r2, &err));
    assert_true(store_id_valid(r1, "pay_"));
    assert_string_not_equal(r1, r2);
    assert_false(store_id_valid(r1, "sec_"));
    assert_false(store_id_valid("sec_5NPKMVKYTE6Z2RVKV37EW1BN4", "sec_"));   /* short */
    assert_false(store_id_valid("sec_5NPKMVKYTE6Z2RVKV37EW1BN4HH", "sec_")); /* long */
    assert_false(store_id_valid("sec_5NPKMVKYTE6Z2RVKV37EW1BN4I", "sec_"));  /* I not Crockford */
    assert_false(store_id_valid("sec_5npkmvkyte6z2rvkv37ew1bn4h", "sec_"));  /* lower case */
    assert_false(store_id_valid(NULL, "sec_"));
}

/* ---- envelope --------------------------------------------------------------------------- */

typedef struct sealed {
    unsigned char nonce[CX_GCM_NONCE_LEN], tag[CX_GCM_TAG_LEN], ct[64];
    size_t ctlen;
} sealed_t;

static const store_bind_t good_bind = {.secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H",
                                       .version = 3,
                                       .owner_type = "user",
                                       .owner_id = "alice",
                                       .kind = "api_key",
                                       .payload_id = "pay_00000000000000000000000000"};

static cx_secret_t *fake_dek(unsigned char fill)
{
    unsigned char k[CX_AES_KEY_LEN];
    memset(k, fill, sizeof(k));
    return cx_secret_from(k, sizeof(k));
}

static store_payload_t payload_of(const sealed_t *s, const store_bind_t *b)
{
    static const uint8_t wrapped[4] = {1, 2, 3, 4};
    store_payload_t p = {.payload_id = b->payload_id,
                         .secret_id = b->secret_id,
                         .version = b->version,
                         .key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK,
                         .key_id = "alias/x",
                         .key_version = "1",
                         .wrapped = wrapped,
                         .wrapped_len = 4,
                         .nonce = s->nonce,
                         .ct = s->ct,
                         .ct_len = (uint32_t)s->ctlen,
                         .tag = s->tag};
    return p;
}

static void expect_integrity(const cx_secret_t *dek, const store_bind_t *b,
                             const store_payload_t *p)
{
    cx_error_t err;
    cx_secret_t *out = store_envelope_open(dek, b, p, &err);
    assert_null(out);
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    /* The same with the AAD encoded by the caller, as Resolve does. */
    unsigned char *aad = NULL, buf[64];
    size_t aadlen = 0;
    assert_true(p->ct_len <= sizeof(buf));
    assert_true(store_bind_aad(b, &aad, &aadlen, &err));
    assert_false(store_envelope_open_to(dek, b, p, aad, aadlen, buf, &err));
    free(aad);
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
}

static void test_envelope_roundtrip_and_binding(void **state)
{
    (void)state;
    static const char value[] = "canary-value-0123456789";
    cx_error_t err;
    sealed_t s = {.ctlen = sizeof(value) - 1};
    cx_secret_t *dek = fake_dek(0x42), *other = fake_dek(0x43);
    assert_true(store_envelope_seal(dek, &good_bind, (const unsigned char *)value, s.ctlen, s.nonce,
                                    s.ct, s.tag, &err));
    assert_memory_not_equal(s.ct, value, s.ctlen);
    store_payload_t p = payload_of(&s, &good_bind);
    cx_secret_t *plain = store_envelope_open(dek, &good_bind, &p, &err);
    assert_non_null(plain);
    assert_int_equal(cx_secret_len(plain), s.ctlen);
    assert_memory_equal(cx_secret_bytes(plain), value, s.ctlen);
    cx_secret_free(plain);
    /* Into the caller's memory, with the AAD encoded once by the caller (Resolve needs it for
     * the DEK cache key too): the same value; an AAD of other fields is refused even where the
     * document's ids agree, and nothing of the plaintext is left in the caller's buffer. */
    unsigned char *aad = NULL, out[sizeof(value)], zero[sizeof(value)] = {0};
    size_t aadlen = 0;
    assert_true(store_bind_aad(&good_bind, &aad, &aadlen, &err));
    assert_true(store_envelope_open_to(dek, &good_bind, &p, aad, aadlen, out, &err));
    free(aad);
    assert_memory_equal(out, value, s.ctlen);
    store_bind_t other_kind = good_bind;
    other_kind.kind = "token";
    assert_true(store_bind_aad(&other_kind, &aad, &aadlen, &err));
    assert_false(store_envelope_open_to(dek, &good_bind, &p, aad, aadlen, out, &err));
    free(aad);
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    assert_memory_equal(out, zero, s.ctlen);

    /* Every bound field, changed on the metadata side (AAD differs). The payload document is
     * kept consistent with it so the id cross-check alone cannot be what refuses it. */
    for (int field = 0; field < 6; field++) {
        store_bind_t b = good_bind;
        switch (field) {
        case 0:
            b.secret_id = "sec_00000000000000000000000000";
            break;
        case 1:
            b.version = 4;
            break;
        case 2:
            b.owner_type = "team";
            break;
        case 3:
            b.owner_id = "mallory";
            break;
        case 4:
            b.kind = "token";
            break;
        case 5:
            b.payload_id = "pay_11111111111111111111111111";
            break;
        }
        store_payload_t q = payload_of(&s, &b);
        expect_integrity(dek, &b, &q);
    }
    /* A payload document claiming another secret/version/payload id: refused before the
     * cipher. */
    store_payload_t q = p;
    q.secret_id = "sec_00000000000000000000000000";
    expect_integrity(dek, &good_bind, &q);
    q = p;
    q.version = 2;
    expect_integrity(dek, &good_bind, &q);
    /* Tampered nonce, ciphertext, tag; wrong key. */
    sealed_t t = s;
    t.nonce[0] ^= 1;
    q = payload_of(&t, &good_bind);
    expect_integrity(dek, &good_bind, &q);
    t = s;
    t.ct[t.ctlen - 1] ^= 0x80;
    q = payload_of(&t, &good_bind);
    expect_integrity(dek, &good_bind, &q);
    t = s;
    t.tag[15] ^= 1;
    q = payload_of(&t, &good_bind);
    expect_integrity(dek, &good_bind, &q);
    expect_integrity(other, &good_bind, &p);
    /* Truncated ciphertext. */
    q = p;
    q.ct_len--;
    expect_integrity(dek, &good_bind, &q);

    /* Two seals of the same value never share a nonce. */
    sealed_t s2 = {.ctlen = s.ctlen};
    assert_true(store_envelope_seal(dek, &good_bind, (const unsigned char *)value, s.ctlen,
                                    s2.nonce, s2.ct, s2.tag, &err));
    assert_memory_not_equal(s.nonce, s2.nonce, CX_GCM_NONCE_LEN);
    cx_secret_free(dek);
    cx_secret_free(other);
}

static void test_context_pairs(void **state)
{
    (void)state;
    char ver[12];
    cx_kv_t pairs[STORE_CONTEXT_PAIRS];
    store_bind_context(&good_bind, ver, pairs);
    assert_string_equal(pairs[0].key, "secret_id");
    assert_string_equal(pairs[1].value, "3");
    assert_string_equal(pairs[2].value, "user");
    assert_string_equal(pairs[3].value, "alice");
    assert_string_equal(pairs[4].value, "api_key");
    unsigned char *a1 = NULL, *a2 = NULL;
    size_t l1, l2;
    cx_error_t err;
    store_bind_t b = good_bind;
    assert_true(store_bind_aad(&good_bind, &a1, &l1, &err));
    b.payload_id = "pay_11111111111111111111111111";
    assert_true(store_bind_aad(&b, &a2, &l2, &err));
    assert_true(l1 != l2 || memcmp(a1, a2, l1) != 0);
    /* The algorithm name is bound too. */
    assert_non_null(memmem(a1, l1, STORE_ALG, strlen(STORE_ALG)));
    free(a1);
    free(a2);

    unsigned char k1[32], k2[32], k3[32];
    uint8_t w1[3] = {1, 2, 3}, w2[3] = {1, 2, 4};
    store_dek_cache_key(&good_bind, w1, 3, (const unsigned char *)"aad", 3, k1);
    store_dek_cache_key(&good_bind, w2, 3, (const unsigned char *)"aad", 3, k2);
    store_dek_cache_key(&good_bind, w1, 3, (const unsigned char *)"aae", 3, k3);
    assert_memory_not_equal(k1, k2, 32);
    assert_memory_not_equal(k1, k3, 32);
}

/* ---- payload documents ------------------------------------------------------------------ */

static void build_payload(bson_t *d, int omit, int variant)
{
    uint8_t nonce[12] = {0}, tag[16] = {0}, ct[5] = {9, 9, 9, 9, 9}, wk[8] = {7};
    bson_init(d);
    if (omit != 0)
        BSON_APPEND_UTF8(d, "payload_id", "pay_00000000000000000000000000");
    if (omit != 1)
        BSON_APPEND_UTF8(d, "secret_id", "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H");
    if (omit != 2) {
        if (variant == 1)
            BSON_APPEND_UTF8(d, "version", "3");
        else if (variant == 2)
            BSON_APPEND_INT64(d, "version", 0);
        else
            BSON_APPEND_INT64(d, "version", 3);
    }
    if (omit != 3)
        BSON_APPEND_UTF8(d, "alg", variant == 3 ? "AES-128-CBC" : STORE_ALG);
    if (omit != 4)
        BSON_APPEND_UTF8(d, "key_provider", variant == 4 ? "rot13" : "local-cmk");
    if (omit != 5)
        BSON_APPEND_UTF8(d, "key_id", "alias/x");
    if (omit != 6)
        BSON_APPEND_UTF8(d, "key_version", "");
    if (omit != 7)
        BSON_APPEND_BINARY(d, "wrapped_key", BSON_SUBTYPE_BINARY, wk, sizeof(wk));
    if (omit != 8)
        BSON_APPEND_BINARY(d, "nonce", BSON_SUBTYPE_BINARY, nonce, variant == 5 ? 11 : 12);
    if (omit != 9)
        BSON_APPEND_BINARY(d, "ciphertext", BSON_SUBTYPE_BINARY, ct, variant == 6 ? 0 : 5);
    if (omit != 10)
        BSON_APPEND_BINARY(d, "tag", BSON_SUBTYPE_BINARY, tag, variant == 7 ? 15 : 16);
    BSON_APPEND_DATE_TIME(d, "created_at", 1234);
}

static void test_payload_decode(void **state)
{
    (void)state;
    bson_t d;
    store_payload_t p;
    cx_error_t err;
    build_payload(&d, -1, 0);
    assert_true(store_payload_decode(&d, &p, &err));
    assert_int_equal(p.version, 3);
    assert_int_equal(p.ct_len, 5);
    assert_int_equal(p.wrapped_len, 8);
    assert_int_equal(p.created_at_ms, 1234);
    assert_int_equal(p.key_provider, CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    bson_destroy(&d);
    for (int omit = 0; omit <= 10; omit++) {
        build_payload(&d, omit, 0);
        assert_false(store_payload_decode(&d, &p, &err));
        assert_int_equal(err.code, CX_ERR_INTEGRITY);
        bson_destroy(&d);
    }
    for (int variant = 1; variant <= 7; variant++) {
        build_payload(&d, -1, variant);
        assert_false(store_payload_decode(&d, &p, &err));
        assert_int_equal(err.code, CX_ERR_INTEGRITY);
        bson_destroy(&d);
    }
    assert_false(store_payload_decode(NULL, &p, &err));
}

/* ---- DEK cache -------------------------------------------------------------------------- */

/* A hit of k at now (asserted), its lease returned at once. */
static void dek_hit(store_dek_cache_t *c, const unsigned char *k, int64_t now,
                    const cx_secret_t *want)
{
    store_dek_lease_t *lease = NULL;
    const cx_secret_t *got = store_dek_cache_get(c, k, now, &lease);
    assert_non_null(got);
    assert_non_null(lease);
    if (want)
        assert_true(cx_secret_equal(got, want));
    store_dek_cache_release(c, lease);
}

static bool dek_miss(store_dek_cache_t *c, const unsigned char *k, int64_t now)
{
    store_dek_lease_t *lease = (store_dek_lease_t *)&lease; /* must be reset to NULL */
    bool miss = store_dek_cache_get(c, k, now, &lease) == NULL;
    assert_true(!miss || lease == NULL);
    store_dek_cache_release(c, lease);
    return miss;
}

static void test_dek_cache_bounds(void **state)
{
    (void)state;
    unsigned char k1[32] = {1}, k2[32] = {2}, k3[32] = {3};
    cx_secret_t *dek = fake_dek(0x11);

    /* Age. */
    store_dek_cache_t *c = store_dek_cache_new(1000, 100, 8);
    store_dek_cache_put(c, k1, dek, 10000);
    dek_hit(c, k1, 10500, dek);
    assert_true(dek_miss(c, k1, 11000));
    assert_int_equal(store_dek_cache_size(c), 0);
    /* A clock going backwards does not extend life. */
    store_dek_cache_put(c, k1, dek, 10000);
    assert_true(dek_miss(c, k1, 9000));
    assert_true(dek_miss(c, k2, 10000));
    store_dek_cache_free(c);

    /* Uses: the put counts as the first use. */
    c = store_dek_cache_new(60000, 3, 8);
    store_dek_cache_put(c, k1, dek, 0);
    for (int i = 0; i < 2; i++)
        dek_hit(c, k1, 1, dek);
    assert_true(dek_miss(c, k1, 1));
    store_dek_cache_free(c);

    /* Entries: the oldest goes. */
    c = store_dek_cache_new(60000, 100, 2);
    store_dek_cache_put(c, k1, dek, 1);
    store_dek_cache_put(c, k2, dek, 2);
    store_dek_cache_put(c, k3, dek, 3);
    assert_int_equal(store_dek_cache_size(c), 2);
    assert_true(dek_miss(c, k1, 4));
    dek_hit(c, k3, 4, dek);
    store_dek_cache_free(c);

    /* Disabled. */
    c = store_dek_cache_new(0, 100, 8);
    store_dek_cache_put(c, k1, dek, 1);
    assert_true(dek_miss(c, k1, 1));
    store_dek_cache_free(c);
    c = store_dek_cache_new(1000, 100, 0);
    store_dek_cache_put(c, k1, dek, 1);
    assert_true(dek_miss(c, k1, 1));
    store_dek_cache_free(c);
    store_dek_cache_free(NULL);
    store_dek_cache_release(NULL, NULL);
    cx_secret_free(dek);
}

/* A hit lends the cached key itself, not a copy in fresh locked memory (whose mlock and
 * munlock cost more than the rest of a hit); a lent key outlives its entry's expiry,
 * eviction, replacement and the uses running out, and is freed by the last return (the
 * sanitizer's leak check sees one that is not). */
static void test_dek_cache_leases(void **state)
{
    (void)state;
    unsigned char k1[32] = {1}, k2[32] = {2}, k3[32] = {3};
    cx_secret_t *dek = fake_dek(0x11), *other = fake_dek(0x22);
    store_dek_lease_t *l1 = NULL, *l2 = NULL, *l3 = NULL;

    store_dek_cache_t *c = store_dek_cache_new(1000, 4, 2);
    store_dek_cache_put(c, k1, dek, 10);
    const cx_secret_t *a = store_dek_cache_get(c, k1, 11, &l1);
    const cx_secret_t *b = store_dek_cache_get(c, k1, 12, &l2);
    assert_non_null(a);
    assert_ptr_equal(a, b); /* the same key, lent twice */
    assert_ptr_not_equal(a, dek);
    /* Evicted (two newer entries in a cache of two) while lent: still readable by both. */
    store_dek_cache_put(c, k2, other, 13);
    store_dek_cache_put(c, k3, other, 14);
    assert_true(dek_miss(c, k1, 15));
    assert_true(cx_secret_equal(a, dek));
    store_dek_cache_release(c, l1);
    assert_true(cx_secret_equal(b, dek)); /* the other lease still holds it */
    store_dek_cache_release(c, l2);

    /* Expired while lent; replaced by a put of the same digest while lent. */
    const cx_secret_t *e = store_dek_cache_get(c, k2, 20, &l1);
    assert_non_null(e);
    assert_true(dek_miss(c, k2, 2000));
    assert_true(cx_secret_equal(e, other));
    store_dek_cache_put(c, k3, dek, 2000);
    const cx_secret_t *f = store_dek_cache_get(c, k3, 2001, &l3);
    store_dek_cache_put(c, k3, other, 2002);
    assert_true(cx_secret_equal(f, dek));
    dek_hit(c, k3, 2003, other);
    store_dek_cache_release(c, l3);
    store_dek_cache_release(c, l1);

    /* The last use of an entry is lent like any other; the entry then misses. */
    store_dek_cache_put(c, k1, dek, 3000);
    for (int i = 0; i < 2; i++)
        dek_hit(c, k1, 3001, dek);
    const cx_secret_t *g = store_dek_cache_get(c, k1, 3002, &l1);
    assert_non_null(g);
    assert_true(dek_miss(c, k1, 3003));
    assert_true(cx_secret_equal(g, dek));
    store_dek_cache_release(c, l1);
    store_dek_cache_free(c);
    cx_secret_free(dek);
    cx_secret_free(other);
}

/* ---- payload cache ---------------------------------------------------------------------- */

static uint8_t pc_ct[300], pc_wrapped[61], pc_nonce[CX_GCM_NONCE_LEN], pc_tag[CX_GCM_TAG_LEN];

/* A decoded payload with recognisable bytes; ids are 30-char store ids. */
static store_payload_t pc_payload(const char *pid, const char *sid, uint32_t ct_len)
{
    store_payload_t p;
    memset(&p, 0, sizeof(p));
    for (size_t i = 0; i < sizeof(pc_ct); i++)
        pc_ct[i] = (uint8_t)(i * 7 + 1);
    memset(pc_wrapped, 0x77, sizeof(pc_wrapped));
    memset(pc_nonce, 0x11, sizeof(pc_nonce));
    memset(pc_tag, 0x22, sizeof(pc_tag));
    p.payload_id = pid;
    p.secret_id = sid;
    p.version = 3;
    p.key_provider = CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK;
    p.key_id = "alias/credex-dev";
    p.key_version = "1";
    p.wrapped = pc_wrapped;
    p.wrapped_len = sizeof(pc_wrapped);
    p.nonce = pc_nonce;
    p.ct = pc_ct;
    p.ct_len = ct_len;
    p.tag = pc_tag;
    p.created_by = "alice";
    return p;
}

static bool pc_has(store_payload_cache_t *c, const char *pid, int64_t now)
{
    store_payload_t got = {.payload_id = "untouched"};
    rpc_arena_t *arena = rpc_arena_new(256);
    bool hit = store_payload_cache_get(c, pid, now, arena, &got);
    assert_true(hit == (strcmp(got.payload_id, "untouched") != 0));
    rpc_arena_free(arena);
    return hit;
}

static void test_payload_cache_bounds(void **state)
{
    (void)state;
    const char *pa = "pay_AAAAAAAAAAAAAAAAAAAAAAAAAA", *pb = "pay_BBBBBBBBBBBBBBBBBBBBBBBBBB",
               *pc = "pay_CCCCCCCCCCCCCCCCCCCCCCCCCC", *s1 = "sec_11111111111111111111111111",
               *s2 = "sec_22222222222222222222222222";
    store_payload_cache_stats_t st;
    store_payload_t p = pc_payload(pa, s1, 300), got;
    rpc_arena_t *arena = rpc_arena_new(256);

    /* A hit gives a private copy equal to what was put, ids included, in the caller's arena
     * (wiped with it). */
    store_payload_cache_t *c = store_payload_cache_new(1000, 8, STORE_PAYLOAD_CACHE_MAX_BYTES);
    assert_false(store_payload_cache_get(c, pa, 10000, arena, &got));
    assert_int_equal(rpc_arena_used(arena), 0);
    store_payload_cache_put(c, &p, 10000);
    memset(pc_ct, 0, sizeof(pc_ct)); /* the cache holds its own copy */
    assert_true(store_payload_cache_get(c, pa, 10500, arena, &got));
    assert_true(rpc_arena_used(arena) >= 300 + 61 + CX_GCM_NONCE_LEN + CX_GCM_TAG_LEN);
    assert_string_equal(got.payload_id, pa);
    assert_string_equal(got.secret_id, s1);
    assert_int_equal(got.version, 3);
    assert_int_equal(got.key_provider, CREDEX__V1__KEY_PROVIDER__KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(got.key_id, "alias/credex-dev");
    assert_string_equal(got.key_version, "1");
    assert_int_equal(got.ct_len, 300);
    for (uint32_t i = 0; i < got.ct_len; i++)
        assert_int_equal(got.ct[i], (uint8_t)(i * 7 + 1));
    assert_int_equal(got.wrapped_len, 61);
    assert_memory_equal(got.wrapped, pc_wrapped, 61);
    assert_memory_equal(got.nonce, pc_nonce, CX_GCM_NONCE_LEN);
    assert_memory_equal(got.tag, pc_tag, CX_GCM_TAG_LEN);
    /* The copy outlives the entry. */
    store_payload_cache_evict(c, pa);
    assert_int_equal(got.ct[5], (uint8_t)36);
    assert_string_equal(got.payload_id, pa);
    rpc_arena_free(arena);
    assert_false(pc_has(c, pa, 10500));

    /* TTL: from insertion; a clock going backwards does not extend it. */
    p = pc_payload(pa, s1, 300);
    store_payload_cache_put(c, &p, 10000);
    assert_true(pc_has(c, pa, 10999));
    assert_false(pc_has(c, pa, 11000));
    store_payload_cache_put(c, &p, 10000);
    assert_false(pc_has(c, pa, 9000));
    store_payload_cache_stats(c, &st);
    assert_int_equal(st.expired, 2);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    store_payload_cache_free(c);

    /* Entry bound: the oldest goes first; a put of the same id replaces (no duplicate). */
    c = store_payload_cache_new(60000, 2, STORE_PAYLOAD_CACHE_MAX_BYTES);
    store_payload_t a = pc_payload(pa, s1, 10), b = pc_payload(pb, s2, 10),
                    d = pc_payload(pc, s1, 10);
    store_payload_cache_put(c, &a, 1);
    store_payload_cache_put(c, &b, 2);
    store_payload_cache_put(c, &b, 2);
    store_payload_cache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    store_payload_cache_put(c, &d, 3);
    assert_false(pc_has(c, pa, 4));
    assert_true(pc_has(c, pb, 4));
    assert_true(pc_has(c, pc, 4));
    store_payload_cache_stats(c, &st);
    assert_int_equal(st.entries, 2);
    /* Per-secret eviction (delete, revoke, rotate). */
    store_payload_cache_evict_secret(c, s1);
    assert_false(pc_has(c, pc, 4));
    assert_true(pc_has(c, pb, 4));
    store_payload_cache_stats(c, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 2);
    store_payload_cache_free(c);

    /* Byte bound: entries are evicted, oldest first, to stay under it; a single payload over
     * it is not cached at all. */
    size_t one = 100 + 61 + CX_GCM_NONCE_LEN + CX_GCM_TAG_LEN + strlen("alias/credex-dev") +
                 strlen("1") + 30 + 30 + 4;
    c = store_payload_cache_new(60000, 100, 2 * one);
    a = pc_payload(pa, s1, 100);
    b = pc_payload(pb, s1, 100);
    d = pc_payload(pc, s1, 100);
    store_payload_cache_put(c, &a, 1);
    store_payload_cache_put(c, &b, 1);
    store_payload_cache_stats(c, &st);
    assert_int_equal(st.bytes, 2 * one);
    store_payload_cache_put(c, &d, 1);
    assert_false(pc_has(c, pa, 2));
    assert_true(pc_has(c, pb, 2));
    assert_true(pc_has(c, pc, 2));
    store_payload_cache_free(c);
    c = store_payload_cache_new(60000, 100, one);
    store_payload_t big = pc_payload("pay_DDDDDDDDDDDDDDDDDDDDDDDDDD", s2, 300);
    store_payload_cache_put(c, &a, 1);
    store_payload_cache_put(c, &big, 1);
    assert_false(pc_has(c, "pay_DDDDDDDDDDDDDDDDDDDDDDDDDD", 2));
    assert_true(pc_has(c, pa, 2));
    store_payload_cache_free(c);

    /* Disabled: 0 entries or 0 ttl. */
    c = store_payload_cache_new(0, 100, STORE_PAYLOAD_CACHE_MAX_BYTES);
    store_payload_cache_put(c, &a, 1);
    assert_false(pc_has(c, pa, 1));
    store_payload_cache_free(c);
    c = store_payload_cache_new(1000, 0, STORE_PAYLOAD_CACHE_MAX_BYTES);
    store_payload_cache_put(c, &a, 1);
    assert_false(pc_has(c, pa, 1));
    store_payload_cache_evict_secret(c, s1);
    store_payload_cache_free(c);
    store_payload_cache_free(NULL);
}

/* ---- validation ------------------------------------------------------------------------- */

typedef struct create_fx {
    Credex__V1__StoreCreateSecretRequest r;
    Credex__V1__CallerContext caller;
    Credex__V1__Owner owner;
    char *uses[2];
    unsigned char value[8];
} create_fx_t;

static void create_fx_init(create_fx_t *f)
{
    Credex__V1__StoreCreateSecretRequest r = CREDEX__V1__STORE_CREATE_SECRET_REQUEST__INIT;
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    f->r = r;
    f->caller = c;
    f->owner = o;
    f->caller.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    f->caller.subject_user_id = "alice";
    f->caller.peer = "edge";
    f->owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    f->owner.owner_id = "alice";
    f->uses[0] = "mcp.tool";
    f->uses[1] = "agent:run";
    memcpy(f->value, "s3cr3t!!", 8);
    f->r.caller = &f->caller;
    f->r.owner = &f->owner;
    f->r.idempotency_key = "idem-1";
    f->r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    f->r.display_name = "OpenAI key";
    f->r.n_allowed_uses = 2;
    f->r.allowed_uses = f->uses;
    f->r.value.data = f->value;
    f->r.value.len = 8;
}

static void expect_create(create_fx_t *f, const char *peer, cx_code_t code)
{
    cx_error_t err = {0};
    /* As the dispatch does: the contract (shapes), then store's policy. */
    bool ok = cx_contract_check(&f->r.base, &err) && store_validate_create(&f->r, peer, &err);
    if (code == CX_OK) {
        if (!ok)
            fail_msg("expected ok, got %s", err.message);
    } else {
        assert_false(ok);
        assert_int_equal(err.code, code);
    }
    create_fx_init(f);
}

static void test_validate_create(void **state)
{
    (void)state;
    create_fx_t f;
    static unsigned char big[STORE_VALUE_MAX + 1];
    char longname[200];
    memset(longname, 'a', sizeof(longname));
    longname[129] = '\0';
    create_fx_init(&f);
    expect_create(&f, "gateway", CX_OK);
    f.r.idempotency_key = "";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.kind = 0;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.kind = 99;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.display_name = "";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.display_name = longname;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.display_name = "bad\nname";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.value.len = 0;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.value.data = big;
    f.r.value.len = sizeof(big);
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.value.data = big;
    f.r.value.len = STORE_VALUE_MAX;
    expect_create(&f, "gateway", CX_OK);
    f.owner.owner_id = "a|b";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.owner.owner_id = "";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.owner.owner_type = 0;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.owner = NULL;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.caller = NULL;
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.r.display_name = "bad \xc3\x28 utf-8";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    /* The caller context's shape is the contract's (the dispatch checks the whole request). */
    cx_error_t cerr;
    assert_true(cx_contract_check(&f.caller.base, &cerr));
    f.caller.caller_kind = 0;
    assert_false(cx_contract_check(&f.caller.base, &cerr));
    assert_int_equal(cerr.code, CX_ERR_INVALID_ARGUMENT);
    create_fx_init(&f);
    f.uses[1] = "UPPER";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);
    f.uses[1] = "mcp.tool";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT); /* duplicate */
    /* Per-peer kind policy. */
    expect_create(&f, "oauth", CX_ERR_PERMISSION_DENIED);
    expect_create(&f, "edge", CX_ERR_PERMISSION_DENIED);
    f.r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    expect_create(&f, "oauth", CX_ERR_INVALID_ARGUMENT); /* connector_id required */
    f.r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    f.r.connector_id = "conn_1";
    expect_create(&f, "oauth", CX_ERR_PERMISSION_DENIED); /* owner must be platform */
    f.r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_OAUTH_CLIENT_SECRET;
    f.r.connector_id = "conn_1";
    f.owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM;
    f.owner.owner_id = "platform";
    expect_create(&f, "oauth", CX_OK);
    f.r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    f.r.connector_id = "conn_1";
    expect_create(&f, "oauth", CX_OK);
    f.r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    f.r.connector_id = "conn_1";
    expect_create(&f, "gateway", CX_ERR_PERMISSION_DENIED);
    f.owner.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM;
    f.owner.owner_id = "someone";
    expect_create(&f, "gateway", CX_ERR_INVALID_ARGUMENT);

    assert_true(store_peer_may_use("gateway", CREDEX__V1__SECRET_KIND__SECRET_KIND_GENERIC,
                                   CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM));
    assert_false(store_peer_may_use("gateway", CREDEX__V1__SECRET_KIND__SECRET_KIND_GENERIC,
                                    CREDEX__V1__OWNER_TYPE__OWNER_TYPE_PLATFORM));
    assert_false(store_peer_may_use(NULL, CREDEX__V1__SECRET_KIND__SECRET_KIND_GENERIC,
                                    CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER));
}

/* A Resolve of alice's secret by service (for alice), with a resource context. */
static void resolve_request(Credex__V1__StoreResolveRequest *r, Credex__V1__CallerContext *c,
                            Credex__V1__ResourceContext *rc, Credex__V1__CallerKind kind,
                            const char *service)
{
    c->caller_kind = kind;
    c->service_id = (char *)service;
    c->subject_user_id = "alice";
    c->intended_use = "mcp.tool";
    rc->resource_type = "mcp_server";
    rc->resource_id = "github";
    c->resource_context = rc;
    r->caller = c;
    r->secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H";
}

static void test_validate_resolve_update(void **state)
{
    (void)state;
    cx_error_t err;
    Credex__V1__StoreResolveRequest r = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    resolve_request(&r, &c, &rc, CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER,
                    "agent-runtime");
    assert_true(store_validate_resolve(&r, "gateway", &err));
    /* The secret id is the dispatch's to validate (dispatch.c). */
    assert_true(store_validate_secret_id(r.secret_id, &err));
    assert_false(store_validate_secret_id("sec_bad", &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(store_validate_secret_id(NULL, &err));
    r.caller = NULL;
    assert_false(store_validate_resolve(&r, "gateway", &err));
    r.caller = &c;
    c.intended_use = "";
    assert_false(store_validate_resolve(&r, "gateway", &err));
    c.intended_use = "Bad Use";
    assert_false(cx_contract_check(&c.base, &err)); /* its shape: the contract's */
    c.intended_use = "mcp.tool";
    rc.resource_id = "";
    assert_false(store_validate_resolve(&r, "gateway", &err));
    assert_true(store_validate_resolve(&r, "oauth", &err)); /* oauth: no resource context */
    rc.resource_id = "github";
    c.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_BROWSER;
    assert_false(store_validate_resolve(&r, "gateway", &err));
    assert_int_equal(err.code, CX_ERR_BROWSER_DENIED);
    c.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE;
    r.expected_kind = 42;
    assert_false(store_validate_resolve(&r, "gateway", &err));

    Credex__V1__StoreUpdateSecretRequest u = CREDEX__V1__STORE_UPDATE_SECRET_REQUEST__INIT;
    char *mask[] = {"display_name"}, *badmask[] = {"value"};
    u.caller = &c;
    u.secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H";
    u.display_name = "new";
    assert_false(cx_contract_check(&u.base, &err)); /* empty mask: the contract requires one */
    u.n_update_mask = 1;
    u.update_mask = mask;
    assert_true(store_validate_update(&u, &err));
    u.display_name = "";
    assert_false(store_validate_update(&u, &err));
    u.update_mask = badmask;
    assert_false(store_validate_update(&u, &err));

    Credex__V1__PageRequest p = CREDEX__V1__PAGE_REQUEST__INIT;
    assert_int_equal(store_page_size(NULL), 50);
    assert_int_equal(store_page_size(&p), 50);
    p.page_size = 7;
    assert_int_equal(store_page_size(&p), 7);
    p.page_size = 5000;
    assert_int_equal(store_page_size(&p), 200);
}

/* A Resolve's exchange_event: peer oauth only, a provider token set, the one allowed event about
 * a provider connection of the caller's user, success, few attributes. */
static void test_validate_resolve_exchange_event(void **state)
{
    (void)state;
    cx_error_t err;
    Credex__V1__StoreResolveRequest r = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    Credex__V1__CallerContext c = CREDEX__V1__CALLER_CONTEXT__INIT;
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    Credex__V1__AuditEvent__AttributesEntry a = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__AuditEvent__AttributesEntry *as[9] = {&a, &a, &a, &a, &a, &a, &a, &a, &a};
    resolve_request(&r, &c, &rc, CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE, "oauth");
    r.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    e.event_type = "token.exchanged";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.resource_type = "provider_connection";
    e.resource_id = "pcn_1";
    e.subject_user_id = "alice";
    e.attributes = as;
    e.n_attributes = 8;
    r.exchange_event = &e;
    r.exchange_expires_after_ms = 1;
    assert_true(store_validate_resolve(&r, "oauth", &err));
    assert_false(store_validate_resolve(&r, "gateway", &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    assert_false(store_validate_resolve(&r, NULL, &err));
    assert_int_equal(err.code, CX_ERR_PERMISSION_DENIED);
    e.n_attributes = 9;
    assert_false(store_validate_resolve(&r, "oauth", &err));
    e.n_attributes = 8;
    const char *types[] = {"secret.retrieved", "token.refreshed", "token.exchangedx", ""};
    for (size_t i = 0; i < 4; i++) {
        e.event_type = (char *)types[i];
        assert_false(store_validate_resolve(&r, "oauth", &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    }
    e.event_type = "token.exchanged";
    e.resource_type = "secret_ref";
    assert_false(store_validate_resolve(&r, "oauth", &err));
    e.resource_type = "provider_connection";
    e.resource_id = "";
    assert_false(store_validate_resolve(&r, "oauth", &err));
    e.resource_id = "pcn_1";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    assert_false(store_validate_resolve(&r, "oauth", &err));
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_SUCCESS;
    e.subject_user_id = "bob";
    assert_false(store_validate_resolve(&r, "oauth", &err));
    e.subject_user_id = "alice";
    r.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_UNSPECIFIED;
    assert_false(store_validate_resolve(&r, "oauth", &err));
    r.expected_kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_PROVIDER_TOKEN_SET;
    assert_true(store_validate_resolve(&r, "oauth", &err));
    r.exchange_event = NULL; /* the time alone means nothing */
    assert_false(store_validate_resolve(&r, "oauth", &err));
    r.exchange_expires_after_ms = 0;
    assert_true(store_validate_resolve(&r, "oauth", &err));
}

/* ---- secret documents ----------------------------------------------------------------- */

/* A valid stored document: what a create of the create_fx request writes. */
static void ref_doc_valid(create_fx_t *f, bson_t *out)
{
    create_fx_init(f);
    store_ref_new_t n = {.req = &f->r,
                         .secret_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H",
                         .payload_id = "pay_0123456789ABCDEFGHJKMNPQRS",
                         .fingerprint =
                             "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
                         .actor = "alice",
                         .now_ms = 1700000000000};
    store_ref_encode(&n, out);
}

/* base with field replaced by the value of the extended JSON json (NULL: field removed). */
static void ref_doc_with(const bson_t *base, const char *field, const char *json, bson_t *out)
{
    bson_iter_t it;
    bson_init(out);
    assert_true(bson_iter_init(&it, base));
    while (bson_iter_next(&it))
        if (strcmp(bson_iter_key(&it), field) != 0)
            assert_true(bson_append_iter(out, bson_iter_key(&it), -1, &it));
    if (!json)
        return;
    char wrapped[4096];
    bson_error_t berr;
    snprintf(wrapped, sizeof(wrapped), "{\"v\": %s}", json);
    bson_t *v = bson_new_from_json((const uint8_t *)wrapped, -1, &berr);
    if (!v)
        fail_msg("bad test JSON %s: %s", json, berr.message);
    assert_true(bson_iter_init_find(&it, v, "v"));
    assert_true(bson_append_iter(out, field, -1, &it));
    bson_destroy(v);
}

/* The decoder refuses doc as integrity_error naming field, and leaves *out alone. */
static void expect_ref_refused(const bson_t *doc, const char *field, const char *what)
{
    store_ref_t ref = {.payload_id = "untouched"};
    cx_error_t err = {0};
    char named[64];
    rpc_arena_t *arena = rpc_arena_new(1024);
    if (store_ref_decode(arena, doc, &ref, &err))
        fail_msg("tampered %s (%s) was accepted", field, what);
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    snprintf(named, sizeof(named), "(%s)", field);
    if (!strstr(err.message, named))
        fail_msg("tampered %s (%s): message does not name it: %s", field, what, err.message);
    assert_string_equal(ref.payload_id, "untouched");
    assert_null(ref.meta);
    rpc_arena_free(arena);
}

static void test_ref_decode_valid(void **state)
{
    (void)state;
    create_fx_t f;
    bson_t doc, d2;
    store_ref_t ref;
    cx_error_t err;
    rpc_arena_t *arena = rpc_arena_new(1024);
    ref_doc_valid(&f, &doc);
    assert_true(store_ref_decode(arena, &doc, &ref, &err));
    assert_string_equal(ref.meta->secret_id, "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H");
    assert_int_equal(ref.meta->owner->owner_type, CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER);
    assert_string_equal(ref.meta->owner->owner_id, "alice");
    assert_int_equal(ref.meta->kind, CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY);
    assert_int_equal(ref.meta->status, CREDEX__V1__SECRET_STATUS__SECRET_STATUS_ACTIVE);
    assert_int_equal(ref.meta->current_version, 1);
    assert_int_equal(ref.meta->n_allowed_uses, 2);
    assert_string_equal(ref.meta->allowed_uses[1], "agent:run");
    assert_string_equal(ref.meta->masked_value, "********");
    assert_string_equal(ref.payload_id, "pay_0123456789ABCDEFGHJKMNPQRS");
    assert_int_equal(ref.meta->created_at_ms, 1700000000000);
    assert_int_equal(ref.meta->rotated_at_ms, 0);
    /* The limits themselves are fine: 16 uses, version 2^32-1 (as int32 or int64), dates. */
    const char *fine[][2] = {
        {"allowed_uses", "[\"u0\",\"u1\",\"u2\",\"u3\",\"u4\",\"u5\",\"u6\",\"u7\",\"u8\",\"u9\","
                         "\"ua\",\"ub\",\"uc\",\"ud\",\"ue\",\"uf\"]"},
        {"allowed_uses", "[]"},
        {"current_version", "{\"$numberLong\": \"4294967295\"}"},
        {"current_version", "{\"$numberInt\": \"7\"}"},
        {"rotated_at", "{\"$date\": {\"$numberLong\": \"1700000000001\"}}"},
        {"status", "\"deleted\""},
        {"description", "\"caf\\u00e9 \\u2603\""},
        {"description", "\"line\\nbreak\\ttab\""}, /* multi-line text (the contract) */
    };
    for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
        ref_doc_with(&doc, fine[i][0], fine[i][1], &d2);
        if (!store_ref_decode(arena, &d2, &ref, &err))
            fail_msg("valid %s %s refused: %s", fine[i][0], fine[i][1], err.message);
        bson_destroy(&d2);
    }
    bson_destroy(&doc);
    rpc_arena_free(arena);
}

/* pre, then n times c, then post, into buf. */
static void json_run(char *buf, size_t bufsz, const char *pre, char c, size_t n, const char *post)
{
    size_t o = strlen(pre);
    assert_true(o + n + strlen(post) < bufsz);
    memcpy(buf, pre, o);
    memset(buf + o, c, n);
    snprintf(buf + o + n, bufsz - o - n, "%s", post);
}

static void test_ref_decode_tampered(void **state)
{
    (void)state;
    create_fx_t f;
    bson_t doc, d2;
    char long_name[300], long_desc[1200], seventeen[400], long_use[100];
    json_run(long_name, sizeof(long_name), "\"", 'n', 129, "\"");
    json_run(long_desc, sizeof(long_desc), "\"", 'd', 1025, "\"");
    json_run(long_use, sizeof(long_use), "[\"", 'u', 65, "\"]");
    size_t o = (size_t)snprintf(seventeen, sizeof(seventeen), "[");
    for (int i = 0; i < 17; i++)
        o += (size_t)snprintf(seventeen + o, sizeof(seventeen) - o, "%s\"use%d\"", i ? "," : "", i);
    snprintf(seventeen + o, sizeof(seventeen) - o, "]");
    const char *cases[][2] = {
        {"secret_id", "\"sec_bad\""},
        {"secret_id", "\"pay_0123456789ABCDEFGHJKMNPQRS\""},
        {"secret_id", "42"},
        {"secret_id", NULL},
        {"owner_type", "\"bogus\""},
        {"owner_type", "\"USER\""},
        {"owner_type", "1"},
        {"owner_type", NULL},
        {"owner_id", "\"a|b\""},
        {"owner_id", "\"\""},
        {"owner_id", "\"two words\""},
        {"owner_id", "{\"id\": \"alice\"}"},
        {"kind", "\"bogus\""},
        {"kind", "\"API_KEY\""},
        {"kind", "null"},
        {"status", "\"bogus\""},
        {"status", "true"},
        {"display_name", "\"\""},
        {"display_name", "\"tab\\there\""},
        {"display_name", long_name},
        {"description", long_desc},
        {"description", "\"carriage\\rreturn\""},
        {"provider", "\"bad provider\""},
        {"connector_id", "\"bad\\u0001id\""},
        {"allowed_uses", "\"mcp.tool\""},
        {"allowed_uses", "[\"UPPER\"]"},
        {"allowed_uses", "[1]"},
        {"allowed_uses", "[\"a\", \"a\"]"},
        {"allowed_uses", "[\"\"]"},
        {"allowed_uses", "{\"0\": \"mcp.tool\"}"},
        {"allowed_uses", seventeen},
        {"allowed_uses", long_use},
        {"allowed_uses", NULL},
        {"current_version", "0"},
        {"current_version", "-1"},
        {"current_version", "{\"$numberLong\": \"4294967296\"}"},
        {"current_version", "\"1\""},
        {"current_version", "1.0"},
        {"current_version", NULL},
        {"current_payload_id", "\"pay_x\""},
        {"current_payload_id", "\"sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\""},
        {"value_set", "1"},
        {"value_set", NULL},
        {"create_fingerprint", "\"00112233\""},
        {"create_fingerprint",
         "\"00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF\""},
        {"created_by", "\"two words\""},
        {"updated_by", NULL},
        {"created_at", "1234"},
        {"updated_at", "{\"$date\": {\"$numberLong\": \"-5\"}}"},
        {"rotated_at", "\"yesterday\""},
        {"deleted_at", "true"},
    };
    ref_doc_valid(&f, &doc);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ref_doc_with(&doc, cases[i][0], cases[i][1], &d2);
        expect_ref_refused(&d2, cases[i][0], cases[i][1] ? cases[i][1] : "missing");
        bson_destroy(&d2);
    }
    /* Bytes JSON cannot say: invalid UTF-8, an embedded NUL (the C string would differ from
     * the stored one). */
    const struct {
        const char *field, *bytes;
        int len;
    } raw[] = {
        {"display_name", "bad \xc3\x28", 6},
        {"owner_id", "ali\0ce", 6},
        {"description", "d\xff", 2},
        {"secret_id", "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H\0x", 32},
        /* Each string the decoder reads, with a byte that is not UTF-8: no field may rely on a
         * check that lets it through (the decoder validates no UTF-8 of its own). */
        {"secret_id", "sec_5NPKMVKYTE6Z2RVKV37EW1BN4\xc3", 30},
        {"owner_type", "us\xe9r", 4},
        {"owner_id", "alic\xe9", 5},
        {"kind", "api_k\xe9y", 7},
        {"status", "activ\xe9", 6},
        {"provider", "openai\xc3", 7},
        {"connector_id", "conn\xff", 5},
        {"current_payload_id", "pay_0123456789ABCDEFGHJKMNPQR\xc3", 30},
        {"create_fingerprint",
         "00112233445566778899aabbccddeeff00112233445566778899aabbccddee\xc3\xa9", 64},
        {"created_by", "alic\xe9", 5},
        {"updated_by", "\xc3\x28", 2},
    };
    for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
        ref_doc_with(&doc, raw[i].field, NULL, &d2);
        bson_append_utf8(&d2, raw[i].field, -1, raw[i].bytes, raw[i].len);
        expect_ref_refused(&d2, raw[i].field, "raw bytes");
        bson_destroy(&d2);
    }
    bson_t arr;
    ref_doc_with(&doc, "allowed_uses", NULL, &d2);
    BSON_APPEND_ARRAY_BEGIN(&d2, "allowed_uses", &arr);
    bson_append_utf8(&arr, "0", -1, "mcp\0tool", 8);
    bson_append_array_end(&d2, &arr);
    expect_ref_refused(&d2, "allowed_uses", "embedded NUL");
    bson_destroy(&d2);
    /* A platform secret belongs to "platform". */
    ref_doc_with(&doc, "owner_type", "\"platform\"", &d2);
    expect_ref_refused(&d2, "owner_id", "platform owned by alice");
    bson_destroy(&d2);
    bson_destroy(&doc);
}

/* The decoder finds its fields in one pass over the document: whatever their order, and, for a
 * key stored twice, the first (what a lookup by name reads), never the last. */
static void test_ref_decode_field_order(void **state)
{
    (void)state;
    create_fx_t f;
    bson_t doc, rev, d2;
    bson_iter_t it;
    store_ref_t ref;
    cx_error_t err;
    const char *keys[64];
    size_t n = 0;
    rpc_arena_t *arena = rpc_arena_new(1024);
    ref_doc_valid(&f, &doc);
    assert_true(bson_iter_init(&it, &doc));
    while (bson_iter_next(&it) && n < 64)
        keys[n++] = bson_iter_key(&it);
    bson_init(&rev); /* every field, last first */
    for (size_t i = n; i-- > 0;) {
        assert_true(bson_iter_init_find(&it, &doc, keys[i]));
        assert_true(bson_append_iter(&rev, keys[i], -1, &it));
    }
    assert_true(store_ref_decode(arena, &rev, &ref, &err));
    assert_string_equal(ref.meta->secret_id, "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H");
    assert_string_equal(ref.payload_id, "pay_0123456789ABCDEFGHJKMNPQRS");
    assert_int_equal(ref.meta->created_at_ms, 1700000000000);
    assert_int_equal(ref.meta->n_allowed_uses, 2);
    /* A second display_name after the valid one is not read... */
    bson_copy_to(&doc, &d2);
    BSON_APPEND_UTF8(&d2, "display_name", "tab\there");
    assert_true(store_ref_decode(arena, &d2, &ref, &err));
    assert_string_equal(ref.meta->display_name, f.r.display_name);
    bson_destroy(&d2);
    /* ...and a bad first one is not excused by a good one after it. */
    ref_doc_with(&doc, "display_name", "\"\"", &d2);
    BSON_APPEND_UTF8(&d2, "display_name", "fine");
    expect_ref_refused(&d2, "display_name", "empty, then a valid repeat");
    bson_destroy(&d2);
    /* A damaged document (a string whose length runs past the document) yields no field. */
    const uint8_t junk[12] = {12, 0, 0, 0, 0x02, 'a', 0, 0xff, 0, 0, 0, 0};
    bson_t *bad = bson_new_from_data(junk, sizeof(junk));
    assert_non_null(bad);
    expect_ref_refused(bad, "secret_id", "damaged document");
    bson_destroy(bad);
    bson_destroy(&rev);
    bson_destroy(&doc);
    rpc_arena_free(arena);
}

/* ---- cursors and audit documents -------------------------------------------------------- */

static void test_cursor(void **state)
{
    (void)state;
    char tok[64], id[STORE_ID_BUF];
    int64_t ms = 0;
    store_cursor_encode(1700000000123, "evt_0123456789ABCDEFGHJKMNPQRS", tok, sizeof(tok));
    assert_true(store_cursor_decode(tok, &ms, id));
    assert_int_equal(ms, 1700000000123);
    assert_string_equal(id, "evt_0123456789ABCDEFGHJKMNPQRS");
    const char *bad[] = {"",
                         ".",
                         "12",
                         "12.",
                         "x.evt_0123456789ABCDEFGHJKMNPQRS",
                         "12.evt_0123",
                         "99999999999999999999.evt_0123456789ABCDEFGHJKMNPQRS",
                         "12.abc_0123456789ABCDEFGHJKMNPQRS"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(store_cursor_decode(bad[i], &ms, id));
}

static void test_audit_roundtrip(void **state)
{
    (void)state;
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT, d;
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    Credex__V1__AuditEvent__AttributesEntry a = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__AuditEvent__AttributesEntry *ap[] = {&a};
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_TEAM;
    o.owner_id = "team-a";
    a.key = "version";
    a.value = "2";
    e.event_id = "evt_0123456789ABCDEFGHJKMNPQRS";
    e.created_at_ms = 42;
    e.event_type = "secret.retrieved";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    e.reason = "permission_denied";
    e.resource_type = "secret_ref";
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    e.correlation_id = "corr-1";
    e.owner = &o;
    e.n_attributes = 1;
    e.attributes = ap;
    bson_t doc;
    store_audit_encode(&e, &doc);
    rpc_arena_t *arena = rpc_arena_new(1024);
    assert_true(store_audit_decode(&doc, arena, &d));
    assert_string_equal(d.event_type, "secret.retrieved");
    assert_int_equal(d.outcome, e.outcome);
    assert_int_equal(d.caller_kind, e.caller_kind);
    assert_int_equal(d.created_at_ms, 42);
    assert_string_equal(d.owner->owner_id, "team-a");
    assert_int_equal(d.n_attributes, 1);
    assert_string_equal(d.attributes[0]->value, "2");
    bson_destroy(&doc);
    rpc_arena_free(arena);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_id_derivation),
        cmocka_unit_test(test_envelope_roundtrip_and_binding),
        cmocka_unit_test(test_context_pairs),
        cmocka_unit_test(test_payload_decode),
        cmocka_unit_test(test_dek_cache_bounds),
        cmocka_unit_test(test_dek_cache_leases),
        cmocka_unit_test(test_payload_cache_bounds),
        cmocka_unit_test(test_validate_create),
        cmocka_unit_test(test_validate_resolve_update),
        cmocka_unit_test(test_validate_resolve_exchange_event),
        cmocka_unit_test(test_ref_decode_valid),
        cmocka_unit_test(test_ref_decode_tampered),
        cmocka_unit_test(test_ref_decode_field_order),
        cmocka_unit_test(test_cursor),
        cmocka_unit_test(test_audit_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
