/* Fuzz target: configuration values (every parser, and a whole load with one hostile value). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/config/cx_config.h"

const char *const fuzz_seeds[] = {"true",
                                  "0",
                                  "65535",
                                  "127.0.0.1:7101",
                                  "local-cmk",
                                  "mongodb://u:p@h:1/db",
                                  "https://x/jwks.json",
                                  "aws-kms",
                                  "18446744073709551616",
                                  "-1",
                                  " 1",
                                  NULL};

static const char *const names[] = {
    "CAIPE_CREDENTIALS_ENABLED", "CREDENTIAL_KEY_PROVIDER", "CREDEX_RPC_THREADS",
    "CREDEX_KEYWRAP_ADDR",       "CREDEX_MONGO_URI",        "CREDEX_JWKS",
    "CREDEX_TRUST_DOMAIN",       "CREDEX_LOG_LEVEL",        "CREDEX_RPC_DEADLINE_MS",
    "CREDENTIAL_STORE_BACKEND",  "CREDEX_OPENFGA_URL",      "CREDEX_TLS_CA"};

struct env {
    const char *name;
    const char *value;
};

static const char *lookup(void *ctx, const char *name)
{
    const struct env *e = ctx;
    return strcmp(name, e->name) == 0 ? e->value : NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    char *v = malloc(size);
    memcpy(v, data + 1, size - 1);
    v[size - 1] = '\0';
    cx_error_t err;
    bool b;
    uint64_t u;
    char out[64];
    size_t idx;
    static const char *const choices[] = {"a", "b", NULL};
    cx_config_parse_bool("X", v, false, &b, &err);
    cx_config_parse_uint("X", v, 1, 1000, 5, &u, &err);
    cx_config_parse_str("X", v, "d", out, sizeof(out), &err);
    cx_config_parse_enum("X", v, choices, 0, &idx, &err);
    struct env e = {.name = names[data[0] % (sizeof(names) / sizeof(names[0]))], .value = v};
    cx_config_t *cfg = NULL;
    if (cx_config_load(&cfg, lookup, &e, &err))
        cx_config_free(cfg);
    else if (strlen(err.message) >= CX_ERROR_MESSAGE_MAX)
        abort(); /* a message must always be NUL-terminated within the struct */
    free(v);
    return 0;
}
