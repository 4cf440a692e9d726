/*
 * cx_crypto: secrets, AES-256-GCM (known answers from the GCM specification's test cases, which
 * SP 800-38D's validation vectors include), tamper detection byte by byte, HKDF-SHA256 (RFC 5869),
 * canonical encryption contexts and hex decoding.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/crypto/cx_crypto.h"

/* Test helper: hex (no separators) into a fresh malloc'd buffer of *len bytes. */
static unsigned char *unhex(const char *hex, size_t *len)
{
    size_t n = strlen(hex) / 2;
    unsigned char *b = malloc(n > 0 ? n : 1);
    if (n > 0)
        assert_true(cx_crypto_hex_decode(hex, strlen(hex), b, n, NULL));
    *len = n;
    return b;
}

static cx_secret_t *key_of_hex(const char *hex)
{
    size_t n;
    unsigned char *b = unhex(hex, &n);
    cx_secret_t *k = cx_secret_from(b, n);
    cx_crypto_wipe(b, n);
    free(b);
    assert_non_null(k);
    return k;
}

/* ---- secrets ---------------------------------------------------------------------------- */

static void test_secret_lifecycle(void **state)
{
    (void)state;
    assert_null(cx_secret_new(0));
    assert_null(cx_secret_new(CX_SECRET_MAX + 1));
    assert_null(cx_secret_from(NULL, 4));
    cx_secret_t *s = cx_secret_new(32);
    assert_non_null(s);
    assert_int_equal(cx_secret_len(s), 32);
    for (size_t i = 0; i < 32; i++)
        assert_int_equal(cx_secret_bytes(s)[i], 0);
    memset(cx_secret_bytes_mut(s), 0xab, 32);
    cx_secret_t *t = cx_secret_from(cx_secret_bytes(s), 32);
    assert_true(cx_secret_equal(s, t));
    cx_secret_bytes_mut(t)[31] ^= 1;
    assert_false(cx_secret_equal(s, t));
    cx_secret_t *u = cx_secret_from("abc", 3);
    assert_false(cx_secret_equal(s, u)); /* lengths differ */
    assert_false(cx_secret_equal(s, NULL));
    cx_secret_t *big = cx_secret_new(CX_SECRET_MAX);
    assert_non_null(big);
    cx_secret_free(big);
    cx_secret_free(s);
    cx_secret_free(t);
    cx_secret_free(u);
    cx_secret_free(NULL);
    assert_int_equal(cx_secret_len(NULL), 0);
    assert_null(cx_secret_bytes(NULL));
}

static void test_wipe(void **state)
{
    (void)state;
    unsigned char buf[64];
    memset(buf, 0x5a, sizeof(buf));
    cx_crypto_wipe(buf + 8, 48);
    for (size_t i = 0; i < sizeof(buf); i++)
        assert_int_equal(buf[i], (i < 8 || i >= 56) ? 0x5a : 0);
    cx_crypto_wipe(NULL, 10); /* NULL-safe */
    cx_crypto_wipe(buf, 0);
}

static void test_random(void **state)
{
    (void)state;
    unsigned char a[32] = {0}, b[32] = {0};
    cx_error_t err;
    assert_true(cx_crypto_random(a, sizeof(a), &err));
    assert_true(cx_crypto_random(b, sizeof(b), &err));
    assert_memory_not_equal(a, b, sizeof(a));
    assert_true(cx_crypto_random(a, 0, &err));
}

/* ---- AES-256-GCM ------------------------------------------------------------------------ */

typedef struct gcm_kat {
    const char *name, *key, *iv, *pt, *aad, *ct, *tag;
} gcm_kat_t;

/* The AES-256 cases (96-bit IV) of McGrew & Viega, "The Galois/Counter Mode of Operation",
 * Appendix B: test cases 14, 15 and 16. */
static const gcm_kat_t kats[] = {
    {"case 14", "0000000000000000000000000000000000000000000000000000000000000000",
     "000000000000000000000000", "00000000000000000000000000000000", "",
     "cea7403d4d606b6e074ec5d3baf39d18", "d0d1c8a799996bf0265b98b5d48ab919"},
    {"case 15", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
     "",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"},
    {"case 16", "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "cafebabefacedbaddecaf888",
     "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
     "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
     "feedfacedeadbeeffeedfacedeadbeefabaddad2",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
     "76fc6ece0f4e1768cddf8853bb2d551b"},
};

static void test_gcm_known_answers(void **state)
{
    (void)state;
    for (size_t k = 0; k < sizeof(kats) / sizeof(kats[0]); k++) {
        const gcm_kat_t *v = &kats[k];
        size_t ivlen, ptlen, aadlen, ctlen, taglen;
        cx_secret_t *key = key_of_hex(v->key);
        unsigned char *iv = unhex(v->iv, &ivlen), *pt = unhex(v->pt, &ptlen);
        unsigned char *aad = unhex(v->aad, &aadlen), *ct = unhex(v->ct, &ctlen);
        unsigned char *tag = unhex(v->tag, &taglen);
        assert_int_equal(ivlen, CX_GCM_NONCE_LEN);
        assert_int_equal(taglen, CX_GCM_TAG_LEN);
        cx_error_t err;
        cx_secret_t *p = cx_crypto_open(key, aadlen ? aad : NULL, aadlen, iv, ct, ctlen, tag, &err);
        assert_non_null(p);
        assert_int_equal(cx_secret_len(p), ptlen);
        assert_memory_equal(cx_secret_bytes(p), pt, ptlen);
        /* Any other tag is refused. */
        tag[0] ^= 0x80;
        assert_null(cx_crypto_open(key, aadlen ? aad : NULL, aadlen, iv, ct, ctlen, tag, &err));
        assert_int_equal(err.code, CX_ERR_INTEGRITY);
        cx_secret_free(p);
        cx_secret_free(key);
        free(iv);
        free(pt);
        free(aad);
        free(ct);
        free(tag);
    }
}

struct sealed {
    unsigned char nonce[CX_GCM_NONCE_LEN];
    unsigned char ct[64];
    unsigned char tag[CX_GCM_TAG_LEN];
    unsigned char aad[40];
};

static cx_secret_t *random_key(void)
{
    cx_secret_t *k = cx_secret_new(CX_AES_KEY_LEN);
    assert_true(cx_crypto_random(cx_secret_bytes_mut(k), CX_AES_KEY_LEN, NULL));
    return k;
}

static void seal_fixture(const cx_secret_t *key, const unsigned char *plain, struct sealed *s)
{
    cx_error_t err;
    for (size_t i = 0; i < sizeof(s->aad); i++)
        s->aad[i] = (unsigned char)(i * 7);
    assert_true(cx_crypto_seal(key, s->aad, sizeof(s->aad), plain, sizeof(s->ct), s->nonce, s->ct,
                               s->tag, &err));
}

static void test_gcm_round_trip(void **state)
{
    (void)state;
    unsigned char plain[64];
    for (size_t i = 0; i < sizeof(plain); i++)
        plain[i] = (unsigned char)i;
    cx_secret_t *key = random_key();
    struct sealed a, b;
    seal_fixture(key, plain, &a);
    seal_fixture(key, plain, &b);
    /* Fresh nonces: the same message never encrypts the same way twice. */
    assert_memory_not_equal(a.nonce, b.nonce, CX_GCM_NONCE_LEN);
    assert_memory_not_equal(a.ct, plain, sizeof(plain));
    cx_error_t err;
    cx_secret_t *p =
        cx_crypto_open(key, a.aad, sizeof(a.aad), a.nonce, a.ct, sizeof(a.ct), a.tag, &err);
    assert_non_null(p);
    assert_memory_equal(cx_secret_bytes(p), plain, sizeof(plain));
    cx_secret_free(p);
    /* The same into the caller's memory. */
    unsigned char out[sizeof(plain)];
    assert_true(cx_crypto_open_to(key, a.aad, sizeof(a.aad), a.nonce, a.ct, sizeof(a.ct), a.tag,
                                  out, &err));
    assert_memory_equal(out, plain, sizeof(plain));
    /* No associated data at all also works. */
    unsigned char n[CX_GCM_NONCE_LEN], ct[5], tag[CX_GCM_TAG_LEN];
    assert_true(cx_crypto_seal(key, NULL, 0, (const unsigned char *)"hello", 5, n, ct, tag, &err));
    p = cx_crypto_open(key, NULL, 0, n, ct, 5, tag, &err);
    assert_non_null(p);
    assert_memory_equal(cx_secret_bytes(p), "hello", 5);
    cx_secret_free(p);
    cx_secret_free(key);
}

static void expect_integrity(const cx_secret_t *key, const struct sealed *s, size_t aadlen,
                             size_t ctlen)
{
    cx_error_t err;
    cx_error_clear(&err);
    cx_secret_t *p = cx_crypto_open(key, s->aad, aadlen, s->nonce, s->ct, ctlen, s->tag, &err);
    assert_null(p);
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    /* Into the caller's buffer: refused too, and what was decrypted before the tag check
     * (every byte of it) is wiped, not left for the caller. */
    unsigned char out[sizeof(s->ct)], zero[sizeof(s->ct)] = {0};
    memset(out, 0xAA, sizeof(out));
    cx_error_clear(&err);
    assert_false(cx_crypto_open_to(key, s->aad, aadlen, s->nonce, s->ct, ctlen, s->tag, out, &err));
    assert_int_equal(err.code, CX_ERR_INTEGRITY);
    assert_memory_equal(out, zero, ctlen);
}

static void test_gcm_every_tampered_byte_fails(void **state)
{
    (void)state;
    unsigned char plain[64] = "the quick brown fox jumps over the lazy dog";
    cx_secret_t *key = random_key();
    struct sealed s;
    seal_fixture(key, plain, &s);
    unsigned char *parts[] = {s.nonce, s.ct, s.tag, s.aad};
    size_t lens[] = {sizeof(s.nonce), sizeof(s.ct), sizeof(s.tag), sizeof(s.aad)};
    static const unsigned char flips[] = {0x01, 0x80, 0xff};
    for (size_t part = 0; part < 4; part++)
        for (size_t i = 0; i < lens[part]; i++)
            for (size_t f = 0; f < sizeof(flips); f++) {
                parts[part][i] ^= flips[f];
                expect_integrity(key, &s, sizeof(s.aad), sizeof(s.ct));
                parts[part][i] ^= flips[f];
            }
    /* Truncated associated data or ciphertext. */
    expect_integrity(key, &s, sizeof(s.aad) - 1, sizeof(s.ct));
    expect_integrity(key, &s, 0, sizeof(s.ct));
    expect_integrity(key, &s, sizeof(s.aad), sizeof(s.ct) - 1);
    /* Untouched again: opens. */
    cx_secret_t *p =
        cx_crypto_open(key, s.aad, sizeof(s.aad), s.nonce, s.ct, sizeof(s.ct), s.tag, NULL);
    assert_non_null(p);
    cx_secret_free(p);
    cx_secret_free(key);
}

static void test_gcm_wrong_key_fails(void **state)
{
    (void)state;
    unsigned char plain[64] = "data key";
    cx_secret_t *key = random_key();
    cx_secret_t *other = random_key();
    struct sealed s;
    seal_fixture(key, plain, &s);
    expect_integrity(other, &s, sizeof(s.aad), sizeof(s.ct));
    /* A key one bit away is as wrong as any other. */
    cx_secret_t *near = cx_secret_from(cx_secret_bytes(key), CX_AES_KEY_LEN);
    cx_secret_bytes_mut(near)[0] ^= 1;
    expect_integrity(near, &s, sizeof(s.aad), sizeof(s.ct));
    cx_secret_free(near);
    cx_secret_free(other);
    cx_secret_free(key);
}

static void test_gcm_bad_arguments(void **state)
{
    (void)state;
    cx_error_t err;
    unsigned char n[CX_GCM_NONCE_LEN], ct[8] = {0}, tag[CX_GCM_TAG_LEN] = {0};
    cx_secret_t *short_key = cx_secret_new(16);
    cx_secret_t *key = random_key();
    assert_false(cx_crypto_seal(short_key, NULL, 0, ct, 8, n, ct, tag, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(cx_crypto_seal(NULL, NULL, 0, ct, 8, n, ct, tag, &err));
    assert_false(cx_crypto_seal(key, NULL, 0, ct, 0, n, ct, tag, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(cx_crypto_seal(key, NULL, 4, ct, 8, n, ct, tag, &err));
    assert_null(cx_crypto_open(short_key, NULL, 0, n, ct, 8, tag, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(cx_crypto_open(key, NULL, 0, n, ct, 0, tag, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    unsigned char out[8];
    assert_false(cx_crypto_open_to(short_key, NULL, 0, n, ct, 8, tag, out, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_false(cx_crypto_open_to(key, NULL, 0, n, ct, 8, tag, NULL, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    cx_secret_free(short_key);
    cx_secret_free(key);
}

/* ---- encryption contexts ---------------------------------------------------------------- */

static void test_context_encoding_exact(void **state)
{
    (void)state;
    const cx_kv_t pairs[] = {{"b", "22"}, {"a", ""}};
    unsigned char *out = NULL;
    size_t len = 0;
    cx_error_t err;
    assert_true(cx_crypto_context_encode(pairs, 2, &out, &len, &err));
    static const unsigned char want[] = {0, 0, 0, 1,   'a', 0, 0, 0, 0,   0,
                                         0, 0, 1, 'b', 0,   0, 0, 2, '2', '2'};
    assert_int_equal(len, sizeof(want));
    assert_memory_equal(out, want, sizeof(want));
    free(out);
    /* The empty context has the empty encoding. */
    assert_true(cx_crypto_context_encode(NULL, 0, &out, &len, &err));
    assert_int_equal(len, 0);
    free(out);
}

static void test_context_order_independent(void **state)
{
    (void)state;
    const cx_kv_t a[] = {{"secret_id", "sec_1"},
                         {"version", "3"},
                         {"owner_type", "user"},
                         {"owner_id", "alice"},
                         {"kind", "api_key"}};
    const cx_kv_t b[] = {{"kind", "api_key"},
                         {"owner_id", "alice"},
                         {"version", "3"},
                         {"secret_id", "sec_1"},
                         {"owner_type", "user"}};
    unsigned char *ea = NULL, *eb = NULL;
    size_t la = 0, lb = 0;
    assert_true(cx_crypto_context_encode(a, 5, &ea, &la, NULL));
    assert_true(cx_crypto_context_encode(b, 5, &eb, &lb, NULL));
    assert_int_equal(la, lb);
    assert_memory_equal(ea, eb, la);
    free(ea);
    free(eb);
}

static void test_context_no_collisions(void **state)
{
    (void)state;
    /* Moving bytes between key and value, or between pairs, changes the encoding. */
    const cx_kv_t x[] = {{"ab", "c"}};
    const cx_kv_t y[] = {{"a", "bc"}};
    const cx_kv_t z[] = {{"a", "b"}, {"c", ""}};
    unsigned char *ex = NULL, *ey = NULL, *ez = NULL;
    size_t lx, ly, lz;
    assert_true(cx_crypto_context_encode(x, 1, &ex, &lx, NULL));
    assert_true(cx_crypto_context_encode(y, 1, &ey, &ly, NULL));
    assert_true(cx_crypto_context_encode(z, 2, &ez, &lz, NULL));
    assert_int_equal(lx, ly);
    assert_memory_not_equal(ex, ey, lx);
    assert_int_not_equal(lx, lz);
    free(ex);
    free(ey);
    free(ez);
}

static void test_context_rejects(void **state)
{
    (void)state;
    unsigned char *out = (unsigned char *)"untouched";
    size_t len = 12345;
    cx_error_t err;
    const cx_kv_t dup[] = {{"k", "1"}, {"j", "0"}, {"k", "2"}};
    assert_false(cx_crypto_context_encode(dup, 3, &out, &len, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    const cx_kv_t null_value[] = {{"k", NULL}};
    assert_false(cx_crypto_context_encode(null_value, 1, &out, &len, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);

    /* 65 pairs: too many; 64: fine. */
    cx_kv_t many[CX_CONTEXT_MAX_PAIRS + 1];
    char keys[CX_CONTEXT_MAX_PAIRS + 1][8];
    for (size_t i = 0; i <= CX_CONTEXT_MAX_PAIRS; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        many[i] = (cx_kv_t){keys[i], "v"};
    }
    assert_false(cx_crypto_context_encode(many, CX_CONTEXT_MAX_PAIRS + 1, &out, &len, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_string_equal((const char *)out, "untouched");
    assert_int_equal(len, 12345);
    unsigned char *ok = NULL;
    assert_true(cx_crypto_context_encode(many, CX_CONTEXT_MAX_PAIRS, &ok, &len, &err));
    free(ok);

    /* A 1025-byte value: too long; 1024: fine. */
    char big[CX_CONTEXT_MAX_FIELD + 2];
    memset(big, 'x', sizeof(big));
    big[CX_CONTEXT_MAX_FIELD + 1] = '\0';
    cx_kv_t one = {"k", big};
    assert_false(cx_crypto_context_encode(&one, 1, &out, &len, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    one = (cx_kv_t){big, "v"};
    assert_false(cx_crypto_context_encode(&one, 1, &out, &len, &err));
    big[CX_CONTEXT_MAX_FIELD] = '\0';
    assert_true(cx_crypto_context_encode(&one, 1, &ok, &len, &err));
    assert_int_equal(len, 8 + CX_CONTEXT_MAX_FIELD + 1);
    free(ok);
}

/* ---- HKDF and hex ----------------------------------------------------------------------- */

static void test_hkdf_rfc5869_case1(void **state)
{
    (void)state;
    size_t saltlen, infolen, okmlen;
    unsigned char ikm_bytes[22];
    memset(ikm_bytes, 0x0b, sizeof(ikm_bytes));
    cx_secret_t *ikm = cx_secret_from(ikm_bytes, sizeof(ikm_bytes));
    unsigned char *salt = unhex("000102030405060708090a0b0c", &saltlen);
    unsigned char *info = unhex("f0f1f2f3f4f5f6f7f8f9", &infolen);
    unsigned char *want = unhex("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                                "34007208d5b887185865",
                                &okmlen);
    cx_error_t err;
    cx_secret_t *okm = cx_crypto_hkdf_sha256(ikm, salt, saltlen, info, infolen, okmlen, &err);
    assert_non_null(okm);
    assert_int_equal(cx_secret_len(okm), 42);
    assert_memory_equal(cx_secret_bytes(okm), want, okmlen);
    /* Another info, another key: one KEK per CMK id. */
    cx_secret_t *other = cx_crypto_hkdf_sha256(ikm, salt, saltlen, "x", 1, okmlen, &err);
    assert_false(cx_secret_equal(okm, other));
    assert_null(cx_crypto_hkdf_sha256(ikm, NULL, 0, NULL, 0, 0, &err));
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(cx_crypto_hkdf_sha256(NULL, NULL, 0, NULL, 0, 32, &err));
    cx_secret_free(other);
    cx_secret_free(okm);
    cx_secret_free(ikm);
    free(salt);
    free(info);
    free(want);
}

static void test_hex_decode(void **state)
{
    (void)state;
    unsigned char out[4] = {9, 9, 9, 9};
    cx_error_t err;
    assert_true(cx_crypto_hex_decode("00aFf09B", 8, out, 4, &err));
    static const unsigned char want[] = {0x00, 0xaf, 0xf0, 0x9b};
    assert_memory_equal(out, want, 4);
    static const char *bad[] = {"00aff09g", "00af f09", "0xaff09b", "00aff0:b",
                                "00aff0/b", "00aff0@b", "00aff0`b", "00aff0Gb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(out, 9, sizeof(out));
        assert_false(cx_crypto_hex_decode(bad[i], 8, out, 4, &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_null(strstr(err.message, bad[i])); /* never quotes the input */
        for (size_t k = 0; k < 4; k++)
            assert_int_equal(out[k], 9); /* untouched */
    }
    assert_false(cx_crypto_hex_decode("00aff09", 7, out, 4, &err));
    assert_false(cx_crypto_hex_decode("00aff09b00", 10, out, 4, &err));
    /* Every byte value: exactly the 22 hex digits decode. */
    int accepted = 0;
    for (int c = 0; c < 256; c++) {
        char two[2] = {(char)c, '0'};
        unsigned char o;
        if (cx_crypto_hex_decode(two, 2, &o, 1, NULL))
            accepted++;
    }
    assert_int_equal(accepted, 22);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_secret_lifecycle),
        cmocka_unit_test(test_wipe),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_gcm_known_answers),
        cmocka_unit_test(test_gcm_round_trip),
        cmocka_unit_test(test_gcm_every_tampered_byte_fails),
        cmocka_unit_test(test_gcm_wrong_key_fails),
        cmocka_unit_test(test_gcm_bad_arguments),
        cmocka_unit_test(test_context_encoding_exact),
        cmocka_unit_test(test_context_order_independent),
        cmocka_unit_test(test_context_no_collisions),
        cmocka_unit_test(test_context_rejects),
        cmocka_unit_test(test_hkdf_rfc5869_case1),
        cmocka_unit_test(test_hex_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
