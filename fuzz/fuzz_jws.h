/*
 * fuzz_jws: signing keys for the JWT and JWKS harnesses, which need tokens that really verify
 * to get past the signature check (claims are only read once it holds). Part of fuzz_kit (see
 * fuzz_kit.h). Keys are made fresh per process: the harnesses sign every input themselves, so
 * a crash input reproduces with any key.
 */
#ifndef CREDEX_FUZZ_FUZZ_JWS_H
#define CREDEX_FUZZ_FUZZ_JWS_H

#include <openssl/evp.h>

#include "fuzz/fuzz_kit.h"

#define FUZZ_JWS_SIG_MAX 512 /* RSA-4096 at most; ES256 is 64 */

typedef enum fuzz_jws_alg { FUZZ_JWS_ES256, FUZZ_JWS_RS256 } fuzz_jws_alg_t;

/* A new P-256 (ES256) or RSA-2048 (RS256) key pair; never NULL. EVP_PKEY_free it. */
EVP_PKEY *fuzz_jws_keygen(fuzz_jws_alg_t alg);

/* The public JWK of key, {"kty",...,"kid":kid}, as JSON text into out (outsz bytes, enough
 * for RSA-2048 at 1024). */
void fuzz_jws_jwk(EVP_PKEY *key, fuzz_jws_alg_t alg, const char *kid, char *out, size_t outsz);

/* The JWS signature of msg (ES256: raw r||s, RS256: PKCS#1 v1.5) into sig (FUZZ_JWS_SIG_MAX
 * bytes); its length. */
size_t fuzz_jws_sign(EVP_PKEY *key, fuzz_jws_alg_t alg, const uint8_t *msg, size_t len,
                     uint8_t *sig);

/* "<b64url(header)>.<b64url(payload)>" into a malloc'd NUL-terminated string, with room for a
 * '.' and a FUZZ_JWS_SIG_MAX signature after it; *len its length. */
char *fuzz_jws_signing_input(const uint8_t *header, size_t hlen, const uint8_t *payload,
                             size_t plen, size_t *len);

/* Append "." and the base64url of sig to the signing input tok (of *len bytes). */
void fuzz_jws_append_sig(char *tok, size_t *len, const uint8_t *sig, size_t siglen);

#endif
