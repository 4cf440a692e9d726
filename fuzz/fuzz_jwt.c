/* Fuzz target: raw compact JWS tokens (common/jwt) against a fixed JWKS: the segment, base64url
 * and JSON layers and the signature check, which no input passes (fuzz_jwt_struct signs its
 * inputs to reach the claim checks behind it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/jwt/cx_jwt.h"

static const char jwks_doc[] = "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\","
                               "\"x\":\"AyvXt0wiQpy8CZa5CG8jYnKtHz0nfEXjyMlfGb8NCKU\","
                               "\"y\":\"bnIviEf1eYiAR-BKEvN27U2fAqDJxRgO_6HBs69Vs5Y\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cx_jwks_t *jwks;
    if (!jwks) {
        jwks = cx_jwt_jwks_parse(jwks_doc, strlen(jwks_doc), NULL);
        if (!jwks || cx_jwt_jwks_count(jwks) != 1)
            abort();
    }
    cx_jwt_params_t p = {.issuer = "i", .audience = "credex", .leeway_s = 30};
    cx_jwt_claims_t c;
    /* No valid signature can be produced without the private key: success is a bug. */
    if (cx_jwt_verify_with_jwks(jwks, &p, (const char *)data, size, 1800000000, &c, NULL))
        abort();
    unsigned char out[CX_JWT_TOKEN_MAX];
    size_t n = 0;
    if (cx_jwt_b64url_decode((const char *)data, size, out, sizeof(out), &n) &&
        n > size * 3 / 4 + 1)
        abort();
    return 0;
}
