/*
 * Fuzz target: peer identities (SPIFFE URIs, certificates) and correlation ids (common/rpc).
 * Every input is tried as a URI, a correlation id and a PEM certificate; an input that starts
 * like DER (a SEQUENCE, 0x30) is also wrapped into PEM by the harness first, so that mutations
 * of a real certificate's bytes get past the base64 layer to the SAN inspection.
 * Invariant (abort on violation): an accepted identity names 1..63 characters.
 */
#include <openssl/pem.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"
#include "fuzz/fuzz_kit.h"

static void check_name(bool ok, const char *name)
{
    size_t n = ok ? strlen(name) : 1;
    if (n == 0 || n > 63)
        abort();
}

/* DER bytes as a PEM certificate (NUL-terminated, malloc'd). */
static char *der_to_pem(const uint8_t *data, size_t size)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *mem = NULL, *pem = NULL;
    if (bio == NULL || PEM_write_bio(bio, "CERTIFICATE", "", data, (long)size) <= 0)
        abort();
    long n = BIO_get_mem_data(bio, &mem);
    pem = fuzz_strndup((const uint8_t *)mem, (size_t)n);
    BIO_free(bio);
    return pem;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[RPC_PEER_NAME_MAX];
    check_name(rpc_identity_from_uri((const char *)data, size, "credex.local", name, sizeof(name)),
               name);
    (void)rpc_correlation_id_valid((const char *)data, size);
    char *pem = fuzz_strndup(data, size);
    check_name(rpc_identity_from_pem(pem, "credex.local", name, sizeof(name)), name);
    free(pem);
    if (size > 0 && data[0] == 0x30) {
        pem = der_to_pem(data, size);
        check_name(rpc_identity_from_pem(pem, "credex.local", name, sizeof(name)), name);
        free(pem);
    }
    return 0;
}
