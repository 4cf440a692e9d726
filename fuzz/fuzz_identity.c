/* Fuzz target: peer identities (SPIFFE URIs, certificate PEM) and correlation ids. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/rpc_internal.h"

const char *const fuzz_seeds[] = {"spiffe://credex.local/gateway", "spiffe://credex.local/",
                                  "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                                  "req-1.A_b", NULL};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char name[RPC_PEER_NAME_MAX];
    if (rpc_identity_from_uri((const char *)data, size, "credex.local", name, sizeof(name))) {
        size_t n = strlen(name);
        if (n == 0 || n > 63)
            abort();
    }
    (void)rpc_correlation_id_valid((const char *)data, size);
    char *pem = malloc(size + 1);
    memcpy(pem, data, size);
    pem[size] = '\0';
    (void)rpc_identity_from_pem(pem, "credex.local", name, sizeof(name));
    free(pem);
    return 0;
}
