/*
 * cx_jwt: strict JWT (compact JWS) verification against a JWKS, as docs/IDENTITY.md fixes it.
 *
 *  - token at most CX_JWT_TOKEN_MAX bytes, exactly three base64url segments (strict alphabet,
 *    no padding, no stray bits), header and payload JSON objects without duplicate keys;
 *  - header `alg` from the allow-list ES256, RS256 only (never none, never HMAC: a public JWKS
 *    key used as an HMAC secret would let anyone mint tokens); `crit` is refused;
 *  - `kid` required and only used as a lookup key into the JWKS; the key's type must match alg;
 *  - `iss` equal to the configured issuer, `aud` (string or array) containing the audience,
 *    `exp` required, `exp`/`nbf`/`iat` checked with leeway, `sub` required;
 *  - `azp` and the client claim (named by the caller, `client_id` by default), when present,
 *    are non-empty strings: the gateway tells service tokens from user tokens by them
 *    (docs/IDENTITY.md), so a claim of another type is a bad token, not an absent claim.
 *
 * The JWKS comes from a file path or an https URL (common/http: TLS verified, bounded size and
 * time), is cached for cache_s seconds and refetched on an unknown kid at most once a minute, so
 * that a flood of tokens with random kids cannot turn the gateway into a traffic amplifier
 * against the IdP.
 *
 * A verifier may remember tokens it has verified (cache_max_entries > 0): by the SHA-256 of the
 * whole token, with the claims, for as long as the key set that verified them is the current
 * one. A token seen again skips the signature check and JSON parsing, never the time checks:
 * exp, nbf and iat are checked again at every use with the same leeway. Issuer, audience and
 * the name of the client claim are fixed per verifier, so a remembered token's claims (the
 * client claim's value included) are what a full verification would give. Any JWKS fetch that
 * replaces the key set forgets every token (a key the IdP withdrew stops being honoured at the next
 * fetch, as without the cache). Failed verifications are never remembered.
 *
 * Errors: a token that fails any check is CX_ERR_UNAUTHENTICATED with a message that never
 * contains the token; a JWKS that cannot be fetched (and none cached) is CX_ERR_UNAVAILABLE.
 * Library code: nothing is logged here.
 */
#ifndef CREDEX_COMMON_JWT_CX_JWT_H
#define CREDEX_COMMON_JWT_CX_JWT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"

#define CX_JWT_TOKEN_MAX  8192
#define CX_JWT_CLAIM_MAX  256 /* sub, azp, iss: longer values are refused */
#define CX_JWT_KID_MAX    128
#define CX_JWKS_MAX_BYTES (256 * 1024)
#define CX_JWKS_MAX_KEYS  64

/* A parsed key set. Immutable once built; thread-safe to read. */
typedef struct cx_jwks cx_jwks_t;

/* Parse a JWKS document ({"keys":[...]}). Keys of unsupported types (kty other than EC P-256
 * or RSA), with use other than "sig", or without kid are skipped; an RSA modulus under 2048
 * bits is skipped. A document that is not a JWKS is CX_ERR_INVALID_ARGUMENT. */
cx_jwks_t *cx_jwt_jwks_parse(const char *json, size_t len, cx_error_t *err);
void cx_jwt_jwks_free(cx_jwks_t *jwks); /* NULL-safe */
/* Number of usable keys. */
size_t cx_jwt_jwks_count(const cx_jwks_t *jwks);

/* Verified claims. Strings are NUL-terminated copies. */
typedef struct cx_jwt_claims {
    char alg[8];
    char kid[CX_JWT_KID_MAX];
    char iss[CX_JWT_CLAIM_MAX];
    char sub[CX_JWT_CLAIM_MAX];
    char azp[CX_JWT_CLAIM_MAX];    /* "" when absent */
    char client[CX_JWT_CLAIM_MAX]; /* the client claim's value (cx_jwt_params_t.client_claim);
                                      "" when absent */
    int64_t exp;
    int64_t nbf; /* 0 when absent */
    int64_t iat; /* 0 when absent */
} cx_jwt_claims_t;

typedef struct cx_jwt_params {
    const char *issuer;   /* required, compared exactly */
    const char *audience; /* required */
    unsigned leeway_s;
    const char *client_claim; /* the claim copied into cx_jwt_claims_t.client; NULL or "":
                                 "client_id" */
} cx_jwt_params_t;

/* Verify `token` (len bytes, need not be NUL-terminated) with the keys of `jwks` at time now_s
 * (Unix seconds). On success fills *out (may be NULL); on failure *out is untouched. Reentrant.
 * err->code: CX_ERR_UNAUTHENTICATED for every token fault; a kid not in the set has the detail
 * CX_DETAIL_JWT_UNKNOWN_KID (cx_jwt_verifier refetches the key set on it). */
bool cx_jwt_verify_with_jwks(const cx_jwks_t *jwks, const cx_jwt_params_t *params,
                             const char *token, size_t len, int64_t now_s, cx_jwt_claims_t *out,
                             cx_error_t *err);

/* ---- verifier: a JWKS source + cache + params --------------------------------------------- */

typedef struct cx_jwt_verifier cx_jwt_verifier_t;

typedef struct cx_jwt_verifier_options {
    const char *jwks_source; /* file path, or "https://..." (http:// is refused) */
    const char *issuer;
    const char *audience;
    unsigned leeway_s;
    const char *client_claim;  /* see cx_jwt_params_t; fixed per verifier, so remembered
                                  tokens keep the right value */
    unsigned cache_s;          /* how long a fetched JWKS is used; >= 1 */
    unsigned fetch_timeout_ms; /* whole fetch, URL sources; 0 = 3000 */
    const char *ca_file;       /* PEM CAs for the https source; NULL or "" = system store
                                  (an https source refuses one that cannot be read) */
    /* Minimum seconds between refetches caused by an unknown kid; 0 = 60. */
    unsigned unknown_kid_refetch_s;
    /* Verified tokens remembered (see above); 0 = none, every token is fully verified. */
    unsigned cache_max_entries;
} cx_jwt_verifier_options_t;

/* Create a verifier. The JWKS is fetched lazily on first use, so a gateway can start while the
 * IdP is down (its calls then fail closed with CX_ERR_UNAVAILABLE). Strings are copied. */
cx_jwt_verifier_t *cx_jwt_verifier_new(const cx_jwt_verifier_options_t *opts, cx_error_t *err);
void cx_jwt_verifier_free(cx_jwt_verifier_t *v); /* NULL-safe */

/* Verify a token (see cx_jwt_verify_with_jwks) at the current time. Thread-safe; may block on a
 * JWKS fetch (bounded by fetch_timeout_ms). */
bool cx_jwt_verify(cx_jwt_verifier_t *v, const char *token, size_t len, cx_jwt_claims_t *out,
                   cx_error_t *err);

/* Same at an explicit time (tests). */
bool cx_jwt_verify_at(cx_jwt_verifier_t *v, const char *token, size_t len, int64_t now_s,
                      cx_jwt_claims_t *out, cx_error_t *err);

/* Tokens answered from the verified-token cache, and tokens verified in full, since creation. */
typedef struct cx_jwt_cache_stats {
    uint64_t hits;
    uint64_t misses;
} cx_jwt_cache_stats_t;
void cx_jwt_verifier_cache_stats(cx_jwt_verifier_t *v, cx_jwt_cache_stats_t *out);

/* Strict base64url (RFC 7515 section 2: no padding, no whitespace, unused bits zero). Writes at
 * most outsz bytes; returns false on any bad input or when out is too small. Exposed for tests
 * and fuzzing. */
bool cx_jwt_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outsz,
                          size_t *outlen);

#endif
