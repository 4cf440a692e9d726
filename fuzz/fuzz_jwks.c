/* Fuzz target: JWKS documents (common/jwt), which arrive from a file or the IdP's URL. */
#include <stdint.h>
#include <stdlib.h>

#include "common/jwt/cx_jwt.h"

const char *const fuzz_seeds[] = {
    "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"k1\",\"use\":\"sig\","
    "\"x\":\"AyvXt0wiQpy8CZa5CG8jYnKtHz0nfEXjyMlfGb8NCKU\","
    "\"y\":\"bnIviEf1eYiAR-BKEvN27U2fAqDJxRgO_6HBs69Vs5Y\"}]}",
    "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}",
    "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}]}", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cx_jwks_t *j = cx_jwt_jwks_parse((const char *)data, size, NULL);
    if (j && cx_jwt_jwks_count(j) > CX_JWKS_MAX_KEYS)
        abort();
    cx_jwt_jwks_free(j);
    return 0;
}
