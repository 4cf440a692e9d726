/*
 * cx_config: the environment, read once into an immutable snapshot (docs/STYLE.md rule 7).
 *
 * Names the product requirements define (docs/REQUIREMENTS.md: CAIPE_*, CREDENTIAL_*, <PROVIDER>_*)
 * are kept; credex's own carry the CREDEX_ prefix (docs/DESIGN.md).
 * Every variable has a documented default; a present but bad value is a start-up error whose
 * message names the variable and the accepted values, e.g.
 *   "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"zero\"".
 * Values are never echoed for variables that may hold secrets (*_CLIENT_SECRET).
 *
 * The full list with defaults is in docs/CONFIGURATION.md; keep both in step.
 */
#ifndef CREDEX_COMMON_CONFIG_CX_CONFIG_H
#define CREDEX_COMMON_CONFIG_CX_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"
#include "common/log/cx_log.h"

/* Most origins CREDEX_EDGE_ALLOWED_ORIGINS may list. */
#define CX_CONFIG_MAX_ORIGINS 32

/* The credex processes, in start-up order. */
typedef enum cx_service {
    CX_SVC_KEYWRAP = 0,
    CX_SVC_STORE,
    CX_SVC_OAUTH,
    CX_SVC_GATEWAY,
    CX_SVC_EDGE,
    CX_SVC_COUNT_
} cx_service_t;

/* "keywrap", "store", ...; NULL for an out-of-range value. */
const char *cx_service_name(cx_service_t svc);

typedef enum cx_key_provider {
    CX_KEY_PROVIDER_LOCAL_CMK = 0, /* "local-cmk", alias "dev-local" */
    CX_KEY_PROVIDER_AWS_KMS = 1,   /* "aws-kms" */
} cx_key_provider_t;

/* How the gateway tells a service's own token from a user's token (docs/IDENTITY.md). */
typedef enum cx_jwt_service_rule {
    CX_JWT_RULE_CLIENT_CLAIM = 0, /* "client_claim": the client claim present and equal to azp */
    CX_JWT_RULE_SUB_IS_CLIENT = 1 /* "sub_is_client": sub equal to the client id (RFC 9068) */
} cx_jwt_service_rule_t;

typedef struct cx_config {
    /* Feature toggles (seed names). */
    bool credentials_enabled;        /* CAIPE_CREDENTIALS_ENABLED, default false */
    bool exchange_enabled;           /* CREDENTIAL_EXCHANGE_ENABLED, default false */
    bool bootstrap_oauth_connectors; /* CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS, default false */
    bool use_impersonation_tokens;   /* USE_IMPERSONATION_TOKENS, default false */
    char store_backend[32];          /* CREDENTIAL_STORE_BACKEND: only "mongodb-envelope" */
    cx_key_provider_t key_provider;  /* CREDENTIAL_KEY_PROVIDER, default local-cmk */
    char key_provider_name[16];      /* as configured: "local-cmk", "dev-local" or "aws-kms" */
    char kms_cmk_id[256];            /* CREDENTIAL_KMS_CMK_ID, default "alias/credex-local" */
    char kms_region[64];             /* CREDENTIAL_KMS_REGION, default "" (aws-kms needs it) */

    /* aws-kms (docs/KMS.md): endpoints "" mean AWS's regional ones; http only to loopback and
     * never with CREDEX_PRODUCTION=true. */
    char kms_endpoint[256];  /* CREDEX_KMS_ENDPOINT, default "" (https://kms.<region>...) */
    char sts_endpoint[256];  /* CREDEX_STS_ENDPOINT, default "" (https://sts.<region>...) */
    char kms_ca_file[512];   /* CREDEX_KMS_CA_FILE, default "" (system trust store) */
    unsigned kms_timeout_ms; /* CREDEX_KMS_TIMEOUT_MS 100..60000, default 3000 */

    /* credex-specific. */
    bool production;               /* CREDEX_PRODUCTION, default false */
    cx_log_level_t log_level;      /* CREDEX_LOG_LEVEL: debug|info|warn|error, default info */
    char addr[CX_SVC_COUNT_][128]; /* CREDEX_<SERVICE>_ADDR, default 127.0.0.1:710{1..5} */
    char edge_http_addr[128];      /* CREDEX_EDGE_HTTP_ADDR, default 127.0.0.1:8080 */
    /* CREDEX_<SERVICE>_OPS_ADDR, default 127.0.0.1:910{1..5}: the plain-HTTP metrics and probe
     * listener (common/ops); "off" turns it off. */
    char ops_addr[CX_SVC_COUNT_][128];
    char tls_ca[512];              /* CREDEX_TLS_CA: PEM file of the CA that signs every peer */
    char tls_cert[512];            /* CREDEX_TLS_CERT: this process's certificate chain */
    char tls_key[512];             /* CREDEX_TLS_KEY: this process's private key */
    char trust_domain[128];        /* CREDEX_TRUST_DOMAIN, default "credex.local" */
    unsigned rpc_threads;          /* CREDEX_RPC_THREADS 1..256, default 8 */
    unsigned rpc_threads_max;      /* CREDEX_RPC_THREADS_MAX 1..1024, default 128 */
    size_t rpc_max_message_bytes;  /* CREDEX_RPC_MAX_MESSAGE_BYTES 1024..67108864, default 4 MiB */
    size_t rpc_max_metadata_bytes; /* CREDEX_RPC_MAX_METADATA_BYTES 1024..1048576, default 16 KiB */
    unsigned rpc_max_deadline_ms;  /* CREDEX_RPC_MAX_DEADLINE_MS 100..600000, default 30000 */
    unsigned rpc_default_deadline_ms; /* CREDEX_RPC_DEADLINE_MS 10..600000, default 5000 */
    unsigned shutdown_grace_ms;       /* CREDEX_SHUTDOWN_GRACE_MS 0..600000, default 5000 */
    char mongo_uri[512];              /* CREDEX_MONGO_URI, default mongodb://127.0.0.1:27017 */
    char mongo_db[64];                /* CREDEX_MONGO_DB, default "credex" */
    char openfga_url[256];            /* CREDEX_OPENFGA_URL, default http://127.0.0.1:8081 */
    char openfga_store_id[64];        /* CREDEX_OPENFGA_STORE_ID, default "" */
    char openfga_model_id[64];        /* CREDEX_OPENFGA_MODEL_ID, default "" (latest) */
    char jwks[512];                   /* CREDEX_JWKS: file path or https URL, default "" */
    char jwks_ca_file[512];           /* CREDEX_JWKS_CA_FILE, default "" (system trust store) */
    char jwt_issuer[256];             /* CREDEX_JWT_ISSUER, default "" */
    char jwt_audience[128];           /* CREDEX_JWT_AUDIENCE, default "credex" */
    char local_cmk_key_file[512];     /* CREDEX_LOCAL_CMK_KEY_FILE, default "" */
    /* CREDEX_LOCAL_CMK_RETIRED_KEY_FILE, default "": a local-cmk root whose keys keywrap still
     * unwraps and rewraps (CMK rotation), never wraps new keys under */
    char local_cmk_retired_key_file[512];
    unsigned mongo_timeout_ms;      /* CREDEX_MONGO_TIMEOUT_MS 100..60000, default 3000 */
    bool mongo_write_majority;      /* CREDEX_MONGO_WRITE_CONCERN majority|1, default majority */
    unsigned mongo_pool_max;        /* CREDEX_MONGO_POOL_MAX 1..1024, default 32 */
    unsigned dek_cache_ttl_ms;      /* CREDEX_DEK_CACHE_TTL_MS 0..3600000 (0: off), def. 60000 */
    unsigned dek_cache_max_uses;    /* CREDEX_DEK_CACHE_MAX_USES 1..1000000, default 1000 */
    unsigned dek_cache_max_entries; /* CREDEX_DEK_CACHE_MAX_ENTRIES 0..1000000, default 4096 */
    unsigned jwt_leeway_s;          /* CREDEX_JWT_LEEWAY_S 0..300, default 30 */
    unsigned jwks_cache_s;          /* CREDEX_JWKS_CACHE_S 10..86400, default 300 */
    unsigned jwks_timeout_ms;       /* CREDEX_JWKS_TIMEOUT_MS 100..60000, default 3000 */
    unsigned openfga_timeout_ms;    /* CREDEX_OPENFGA_TIMEOUT_MS 50..60000, default 2000 */
    unsigned openfga_cache_ttl_ms;  /* CREDEX_OPENFGA_CACHE_TTL_MS 0..600000 (0: off), def 10000 */
    unsigned openfga_watch_ms;      /* CREDEX_OPENFGA_WATCH_MS 20..10000, default 100 */
    unsigned jwt_cache_max_entries; /* CREDEX_JWT_CACHE_MAX_ENTRIES 0..1000000, default 4096 */
    unsigned payload_cache_max_entries; /* CREDEX_PAYLOAD_CACHE_MAX_ENTRIES 0..1000000, def 4096 */
    unsigned payload_cache_ttl_ms;      /* CREDEX_PAYLOAD_CACHE_TTL_MS 0..3600000, default 300000 */
    unsigned audit_batch_max;           /* CREDEX_AUDIT_BATCH_MAX 1..1000, default 64 */
    /* The store's cache of secret metadata (docs/DOCUMENT_CACHE.md): entries 0..1000000 (0:
     * off), default 4096; bound 20..60000 ms, default 300; poll 10..30000 ms, default 100, and
     * below the bound. */
    unsigned meta_cache_max_entries; /* CREDEX_STORE_METADATA_CACHE_ENTRIES */
    unsigned meta_cache_bound_ms;    /* CREDEX_STORE_METADATA_CACHE_BOUND_MS */
    unsigned meta_cache_poll_ms;     /* CREDEX_STORE_METADATA_CACHE_POLL_MS */

    /* The edge's HTTP listener (docs/HTTP_API.md). */
    unsigned edge_http_threads;           /* CREDEX_EDGE_HTTP_THREADS 1..256, default 4 */
    size_t edge_max_body_bytes;           /* CREDEX_EDGE_HTTP_MAX_BODY_BYTES, default 256 KiB */
    size_t edge_max_header_bytes;         /* CREDEX_EDGE_HTTP_MAX_HEADER_BYTES, default 16 KiB */
    unsigned edge_max_connections;        /* CREDEX_EDGE_HTTP_MAX_CONNECTIONS, default 1024 */
    unsigned edge_max_connections_per_ip; /* CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP, def. 256 */
    unsigned edge_idle_timeout_s;         /* CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S 1..3600, default 30 */
    unsigned edge_request_timeout_ms;     /* CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS, default 10000 */
    char edge_tls_cert[512];              /* CREDEX_EDGE_HTTP_TLS_CERT: PEM, default "" */
    char edge_tls_key[512];               /* CREDEX_EDGE_HTTP_TLS_KEY: PEM, default "" */
    char edge_allowed_origins[2048];      /* CREDEX_EDGE_ALLOWED_ORIGINS, default "" (none) */
    bool edge_allow_same_site;            /* CREDEX_EDGE_ALLOW_SAME_SITE, default false */
    char edge_ui_url[512]; /* CREDEX_EDGE_UI_URL: where the OAuth callback redirects, default "" */

    /* Outbound calls of oauth to OAuth providers (docs/OAUTH_CONNECTORS.md). */
    char oauth_ca_file[512];          /* CREDEX_OAUTH_CA_FILE, default "" (system trust store) */
    char oauth_allowed_hosts[2048];   /* CREDEX_OAUTH_ALLOWED_HOSTS, comma list, default "" (any) */
    char oauth_test_connect_to[2048]; /* CREDEX_OAUTH_TEST_CONNECT_TO, default "" (none); refused
                                         with CREDEX_PRODUCTION=true */
    unsigned oauth_http_timeout_ms;   /* CREDEX_OAUTH_HTTP_TIMEOUT_MS 100..60000, default 10000 */
    size_t oauth_http_max_response_bytes; /* CREDEX_OAUTH_HTTP_MAX_RESPONSE_BYTES, def. 1 MiB */
    /* Token refresh (docs/TOKEN_REFRESH.md). */
    unsigned oauth_refresh_lease_ms;      /* CREDEX_OAUTH_REFRESH_LEASE_MS 1000..600000, default
                                             30000; above CREDEX_OAUTH_HTTP_TIMEOUT_MS */
    unsigned oauth_test_refresh_pause_ms; /* CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS 0..60000, default
                                             0; refused with CREDEX_PRODUCTION=true */

    /* Service tokens and user tokens (docs/IDENTITY.md). */
    cx_jwt_service_rule_t jwt_service_rule; /* CREDEX_JWT_SERVICE_RULE, default client_claim */
    char jwt_client_claim[64];              /* CREDEX_JWT_CLIENT_CLAIM, default "client_id" */
} cx_config_t;

/* Looks up an environment variable; returns NULL when unset. ctx is passed through. */
typedef const char *(*cx_config_getenv_fn)(void *ctx, const char *name);

/* Build a snapshot from the given lookup (getenv when fn is NULL). On failure *out is
 * untouched, err names the variable and the accepted values. The result is plain data:
 * callers may copy it; free with cx_config_free. Not thread-safe with respect to setenv. */
bool cx_config_load(cx_config_t **out, cx_config_getenv_fn fn, void *ctx, cx_error_t *err);

/* NULL-safe. */
void cx_config_free(cx_config_t *cfg);

/* Building blocks, exposed for tests and for service-specific variables. Each one leaves *out
 * at `def` when value is NULL or empty, and fails naming `name` when the value is bad. */
bool cx_config_parse_bool(const char *name, const char *value, bool def, bool *out,
                          cx_error_t *err); /* true|false|1|0|yes|no (case-insensitive) */
bool cx_config_parse_uint(const char *name, const char *value, uint64_t min, uint64_t max,
                          uint64_t def, uint64_t *out, cx_error_t *err);
/* Copies value (or def) into out; fails when it does not fit in outsz (NUL included). */
bool cx_config_parse_str(const char *name, const char *value, const char *def, char *out,
                         size_t outsz, cx_error_t *err);
/* choices is a NULL-terminated list; *out is the index of the match (exact, case-sensitive). */
bool cx_config_parse_enum(const char *name, const char *value, const char *const *choices,
                          size_t def, size_t *out, cx_error_t *err);

#endif
