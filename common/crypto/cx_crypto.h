/*
 * cx_crypto: the only code that touches key material and ciphers (OpenSSL 3 EVP).
 *
 * cx_secret_t holds credential material and data keys: opaque, heap memory locked against
 * swapping when the system allows (best effort), wiped on free. Nothing in credex prints or
 * logs it: there is no accessor that yields a C string, and cx_log has no field type for it.
 *
 * AEAD is AES-256-GCM with a random 96-bit nonce per encryption and a 128-bit tag; any
 * authentication failure is CX_ERR_INTEGRITY and yields no bytes at all.
 *
 * Encryption contexts (key/value pairs bound as associated data: secret id, version, owner,
 * kind, ...) have one canonical encoding, so the same pairs in any order give the same bytes,
 * and no two different sets of pairs collide: pairs sorted by key, each key and value written as
 * a 4-byte big-endian length followed by its bytes.
 *
 * Thread-safety: all functions are reentrant. Out-params are untouched on failure.
 */
#ifndef CREDEX_COMMON_CRYPTO_CX_CRYPTO_H
#define CREDEX_COMMON_CRYPTO_CX_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

#define CX_AES_KEY_LEN   32
#define CX_GCM_NONCE_LEN 12
#define CX_GCM_TAG_LEN   16
#define CX_SECRET_MAX    (1u << 20) /* largest secret value credex accepts: 1 MiB */

typedef struct cx_secret cx_secret_t;

/* A zeroed secret of len bytes (0 < len <= CX_SECRET_MAX); NULL on a bad length. */
cx_secret_t *cx_secret_new(size_t len);
/* A copy of data. The caller still wipes its own copy. */
cx_secret_t *cx_secret_from(const void *data, size_t len);
/* Wipe and free. NULL-safe. */
void cx_secret_free(cx_secret_t *s);
size_t cx_secret_len(const cx_secret_t *s);
/* The bytes, for ciphers and for the single place material leaves a process (an RPC reply). */
const unsigned char *cx_secret_bytes(const cx_secret_t *s);
unsigned char *cx_secret_bytes_mut(cx_secret_t *s);
/* Constant-time equality of two secrets (lengths compared first, not secret). */
bool cx_secret_equal(const cx_secret_t *a, const cx_secret_t *b);

/* Cryptographically secure random bytes (OpenSSL RAND_bytes). */
bool cx_crypto_random(void *buf, size_t len, cx_error_t *err);
/* Wipe memory in a way the compiler keeps. */
void cx_crypto_wipe(void *p, size_t n);

/* AES-256-GCM seal: a fresh random nonce into nonce_out, ciphertext (plen bytes) into ct_out,
 * tag into tag_out. key must be CX_AES_KEY_LEN bytes; 0 < plen <= CX_SECRET_MAX (an empty
 * plaintext could not come back out of cx_crypto_open as a secret); aad may be NULL when
 * aadlen is 0. INVALID_ARGUMENT on a bad length, INTERNAL if OpenSSL fails (outputs are then
 * wiped). */
bool cx_crypto_seal(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                    const unsigned char *plain, size_t plen,
                    unsigned char nonce_out[CX_GCM_NONCE_LEN], unsigned char *ct_out,
                    unsigned char tag_out[CX_GCM_TAG_LEN], cx_error_t *err);

/* AES-256-GCM open: the plaintext as a new secret, or NULL with CX_ERR_INTEGRITY when the tag,
 * nonce, ciphertext, key or associated data do not match (no partial plaintext ever escapes).
 * INVALID_ARGUMENT when key is not CX_AES_KEY_LEN bytes or ctlen is not 1..CX_SECRET_MAX. */
cx_secret_t *cx_crypto_open(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                            const unsigned char nonce[CX_GCM_NONCE_LEN], const unsigned char *ct,
                            size_t ctlen, const unsigned char tag[CX_GCM_TAG_LEN], cx_error_t *err);
/* cx_crypto_open into out (ctlen bytes of the caller's), for a caller whose plaintext must end
 * up in memory it wipes itself anyway (an RPC reply in the call's arena): it saves a locked
 * secret and a copy, and locking costs two system calls. out holds the plaintext only once the
 * tag verified; on any failure it is wiped (no partial plaintext escapes). Same errors. */
bool cx_crypto_open_to(const cx_secret_t *key, const unsigned char *aad, size_t aadlen,
                       const unsigned char nonce[CX_GCM_NONCE_LEN], const unsigned char *ct,
                       size_t ctlen, const unsigned char tag[CX_GCM_TAG_LEN], unsigned char *out,
                       cx_error_t *err);

typedef struct cx_kv {
    const char *key;
    const char *value;
} cx_kv_t;

#define CX_CONTEXT_MAX_PAIRS 64
#define CX_CONTEXT_MAX_FIELD 1024 /* bytes of one key or one value */

/* Canonical encoding of an encryption context (see above) into out (malloc'd, *outlen set).
 * Fails (INVALID_ARGUMENT) on duplicate keys, more than 64 pairs, or a key/value over 1 KiB.
 * Keys are compared bytewise (strcmp). A NULL key or value is INVALID_ARGUMENT; n == 0 gives the
 * empty encoding (*outlen 0, *out still a block to free). Release *out with free(). */
bool cx_crypto_context_encode(const cx_kv_t *pairs, size_t n, unsigned char **out, size_t *outlen,
                              cx_error_t *err);

/* HKDF-SHA256 (RFC 5869, extract then expand) of ikm into a new secret of outlen bytes
 * (1..255*32). salt and info may be NULL when their length is 0. Used to derive one key-
 * encryption key per CMK id from a root key, so the root key itself never encrypts anything. */
cx_secret_t *cx_crypto_hkdf_sha256(const cx_secret_t *ikm, const void *salt, size_t saltlen,
                                   const void *info, size_t infolen, size_t outlen,
                                   cx_error_t *err);

/* Decode exactly 2*outlen hex digits (either case) into out, with no data-dependent branches or
 * table lookups on the digits (they may be key material). INVALID_ARGUMENT when hexlen is not
 * 2*outlen or a character is not a hex digit (out untouched). The message never quotes the
 * input. */
bool cx_crypto_hex_decode(const char *hex, size_t hexlen, unsigned char *out, size_t outlen,
                          cx_error_t *err);

#endif
