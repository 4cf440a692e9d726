/* cx_config: defaults, accepted values, and the exact wording of start-up errors. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/config/cx_config.h"

/* ---- a fake environment ---------------------------------------------------------------- */

#define ENV_MAX 64

typedef struct fake_env {
    const char *name[ENV_MAX];
    const char *value[ENV_MAX];
    size_t n;
    size_t lookups;
} fake_env_t;

static const char *fake_getenv(void *ctx, const char *name)
{
    fake_env_t *env = ctx;
    env->lookups++;
    for (size_t i = 0; i < env->n; i++) {
        if (strcmp(env->name[i], name) == 0)
            return env->value[i];
    }
    return NULL;
}

static void env_set(fake_env_t *env, const char *name, const char *value)
{
    for (size_t i = 0; i < env->n; i++) {
        if (strcmp(env->name[i], name) == 0) {
            env->value[i] = value;
            return;
        }
    }
    assert_true(env->n < ENV_MAX);
    env->name[env->n] = name;
    env->value[env->n] = value;
    env->n++;
}

/* Load with a single variable set; the config must fail and the message must be exact. */
static void expect_load_error(const char *name, const char *value, const char *message)
{
    fake_env_t env = {0};
    cx_config_t *cfg = (cx_config_t *)(uintptr_t)0x1; /* sentinel: must stay untouched */
    cx_error_t err;

    env_set(&env, name, value);
    cx_error_clear(&err);
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_ptr_equal(cfg, (cx_config_t *)(uintptr_t)0x1);
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, message);
}

static cx_config_t *load_ok(fake_env_t *env)
{
    cx_config_t *cfg = NULL;
    cx_error_t err;
    cx_error_clear(&err);
    if (!cx_config_load(&cfg, fake_getenv, env, &err))
        fail_msg("unexpected config error: %s", err.message);
    assert_non_null(cfg);
    return cfg;
}

/* ---- the whole snapshot ---------------------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = load_ok(&env);

    assert_false(cfg->credentials_enabled);
    assert_false(cfg->exchange_enabled);
    assert_false(cfg->bootstrap_oauth_connectors);
    assert_false(cfg->use_impersonation_tokens);
    assert_string_equal(cfg->store_backend, "mongodb-envelope");
    assert_int_equal(cfg->key_provider, CX_KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(cfg->kms_cmk_id, "alias/credex-local");
    assert_string_equal(cfg->kms_region, "");
    assert_false(cfg->production);
    assert_int_equal(cfg->log_level, CX_LOG_INFO);
    assert_string_equal(cfg->addr[CX_SVC_KEYWRAP], "127.0.0.1:7101");
    assert_string_equal(cfg->addr[CX_SVC_STORE], "127.0.0.1:7102");
    assert_string_equal(cfg->addr[CX_SVC_OAUTH], "127.0.0.1:7103");
    assert_string_equal(cfg->addr[CX_SVC_GATEWAY], "127.0.0.1:7104");
    assert_string_equal(cfg->addr[CX_SVC_EDGE], "127.0.0.1:7105");
    assert_string_equal(cfg->edge_http_addr, "127.0.0.1:8080");
    assert_string_equal(cfg->tls_ca, "");
    assert_string_equal(cfg->tls_cert, "");
    assert_string_equal(cfg->tls_key, "");
    assert_string_equal(cfg->trust_domain, "credex.local");
    assert_int_equal(cfg->rpc_threads, 8);
    assert_int_equal(cfg->rpc_threads_max, 128);
    assert_int_equal(cfg->rpc_max_message_bytes, 4 * 1024 * 1024);
    assert_int_equal(cfg->rpc_max_metadata_bytes, 16 * 1024);
    assert_int_equal(cfg->rpc_max_deadline_ms, 30000);
    assert_int_equal(cfg->rpc_default_deadline_ms, 5000);
    assert_int_equal(cfg->shutdown_grace_ms, 5000);
    assert_string_equal(cfg->mongo_uri, "mongodb://127.0.0.1:27017");
    assert_string_equal(cfg->mongo_db, "credex");
    assert_string_equal(cfg->openfga_url, "http://127.0.0.1:8081");
    assert_string_equal(cfg->openfga_store_id, "");
    assert_string_equal(cfg->openfga_model_id, "");
    assert_string_equal(cfg->jwks, "");
    assert_string_equal(cfg->jwt_issuer, "");
    assert_string_equal(cfg->jwt_audience, "credex");
    assert_string_equal(cfg->local_cmk_key_file, "");
    assert_int_equal(cfg->edge_http_threads, 4);
    assert_int_equal(cfg->edge_max_body_bytes, 262144);
    assert_int_equal(cfg->edge_max_header_bytes, 16384);
    assert_int_equal(cfg->edge_max_connections, 1024);
    assert_int_equal(cfg->edge_max_connections_per_ip, 256);
    assert_int_equal(cfg->edge_idle_timeout_s, 30);
    assert_int_equal(cfg->edge_request_timeout_ms, 10000);
    assert_string_equal(cfg->edge_tls_cert, "");
    assert_string_equal(cfg->edge_tls_key, "");
    assert_string_equal(cfg->edge_allowed_origins, "");
    assert_false(cfg->edge_allow_same_site);
    assert_string_equal(cfg->oauth_ca_file, "");
    assert_string_equal(cfg->oauth_allowed_hosts, "");
    assert_string_equal(cfg->oauth_test_connect_to, "");
    assert_int_equal(cfg->oauth_http_timeout_ms, 10000);
    assert_int_equal(cfg->oauth_http_max_response_bytes, 1048576);
    cx_config_free(cfg);
}

static void test_empty_values_mean_default(void **state)
{
    (void)state;
    /* Quickstart 1 of docs/REQUIREMENTS.md exports CREDENTIAL_KMS_REGION= (empty). */
    fake_env_t env = {0};
    env_set(&env, "CREDENTIAL_KMS_REGION", "");
    env_set(&env, "CREDEX_RPC_THREADS", "");
    env_set(&env, "CAIPE_CREDENTIALS_ENABLED", "");
    env_set(&env, "CREDENTIAL_KEY_PROVIDER", "");
    env_set(&env, "CREDEX_STORE_ADDR", "");
    cx_config_t *cfg = load_ok(&env);
    assert_string_equal(cfg->kms_region, "");
    assert_int_equal(cfg->rpc_threads, 8);
    assert_false(cfg->credentials_enabled);
    assert_int_equal(cfg->key_provider, CX_KEY_PROVIDER_LOCAL_CMK);
    assert_string_equal(cfg->addr[CX_SVC_STORE], "127.0.0.1:7102");
    cx_config_free(cfg);
}

static void test_every_variable_set(void **state)
{
    (void)state;
    fake_env_t env = {0};
    env_set(&env, "CAIPE_CREDENTIALS_ENABLED", "true");
    env_set(&env, "CREDENTIAL_EXCHANGE_ENABLED", "1");
    env_set(&env, "CREDENTIAL_BOOTSTRAP_OAUTH_CONNECTORS", "YES");
    env_set(&env, "USE_IMPERSONATION_TOKENS", "True");
    env_set(&env, "CREDENTIAL_STORE_BACKEND", "mongodb-envelope");
    env_set(&env, "CREDENTIAL_KEY_PROVIDER", "aws-kms");
    env_set(&env, "CREDENTIAL_KMS_CMK_ID", "arn:aws:kms:us-west-2:123456789012:key/abc");
    env_set(&env, "CREDENTIAL_KMS_REGION", "us-west-2");
    env_set(&env, "CREDEX_KMS_ENDPOINT", "https://vpce-1.kms.us-west-2.vpce.amazonaws.com");
    env_set(&env, "CREDEX_STS_ENDPOINT", "https://sts.us-west-2.amazonaws.com/");
    env_set(&env, "CREDEX_KMS_CA_FILE", "/etc/credex/aws-ca.pem");
    env_set(&env, "CREDEX_KMS_TIMEOUT_MS", "60000");
    env_set(&env, "CREDEX_PRODUCTION", "yes");
    env_set(&env, "CREDEX_LOG_LEVEL", "debug");
    env_set(&env, "CREDEX_KEYWRAP_ADDR", "keywrap:443");
    env_set(&env, "CREDEX_STORE_ADDR", "10.0.0.2:0");
    env_set(&env, "CREDEX_OAUTH_ADDR", "[::1]:7203");
    env_set(&env, "CREDEX_GATEWAY_ADDR", "0.0.0.0:65535");
    env_set(&env, "CREDEX_EDGE_ADDR", "edge.credex.svc.cluster.local:7205");
    env_set(&env, "CREDEX_EDGE_HTTP_ADDR", "[::]:8443");
    env_set(&env, "CREDEX_TLS_CA", "/etc/credex/ca.pem");
    env_set(&env, "CREDEX_TLS_CERT", "/etc/credex/store.pem");
    env_set(&env, "CREDEX_TLS_KEY", "/etc/credex/store-key.pem");
    env_set(&env, "CREDEX_TRUST_DOMAIN", "prod.example");
    env_set(&env, "CREDEX_RPC_THREADS", "256");
    env_set(&env, "CREDEX_RPC_THREADS_MAX", "1024");
    env_set(&env, "CREDEX_RPC_MAX_MESSAGE_BYTES", "1024");
    env_set(&env, "CREDEX_RPC_MAX_METADATA_BYTES", "1048576");
    env_set(&env, "CREDEX_RPC_MAX_DEADLINE_MS", "600000");
    env_set(&env, "CREDEX_RPC_DEADLINE_MS", "10");
    env_set(&env, "CREDEX_SHUTDOWN_GRACE_MS", "0");
    env_set(&env, "CREDEX_MONGO_URI", "mongodb+srv://cluster0.example.net/?retryWrites=true");
    env_set(&env, "CREDEX_MONGO_DB", "caipe");
    env_set(&env, "CREDEX_OPENFGA_URL", "https://fga.example:8443");
    env_set(&env, "CREDEX_OPENFGA_STORE_ID", "01HXSTORE");
    env_set(&env, "CREDEX_OPENFGA_MODEL_ID", "01HXMODEL");
    env_set(&env, "CREDEX_JWKS", "https://kc.example/realms/caipe/protocol/openid-connect/certs");
    env_set(&env, "CREDEX_JWT_ISSUER", "https://kc.example/realms/caipe");
    env_set(&env, "CREDEX_JWT_AUDIENCE", "credex-api");
    env_set(&env, "CREDEX_LOCAL_CMK_KEY_FILE", "/var/lib/credex/cmk.key");
    env_set(&env, "CREDEX_EDGE_HTTP_THREADS", "256");
    env_set(&env, "CREDEX_EDGE_HTTP_MAX_BODY_BYTES", "4194304");
    env_set(&env, "CREDEX_EDGE_HTTP_MAX_HEADER_BYTES", "1024");
    env_set(&env, "CREDEX_EDGE_HTTP_MAX_CONNECTIONS", "65536");
    env_set(&env, "CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP", "0");
    env_set(&env, "CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S", "3600");
    env_set(&env, "CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS", "100");
    env_set(&env, "CREDEX_EDGE_HTTP_TLS_CERT", "/etc/credex/edge-https.pem");
    env_set(&env, "CREDEX_EDGE_HTTP_TLS_KEY", "/etc/credex/edge-https.key");
    env_set(&env, "CREDEX_EDGE_ALLOWED_ORIGINS", "https://ui.example, http://localhost:3000");
    env_set(&env, "CREDEX_EDGE_ALLOW_SAME_SITE", "true");
    env_set(&env, "CREDEX_OAUTH_CA_FILE", "/etc/credex/providers-ca.pem");
    env_set(&env, "CREDEX_OAUTH_ALLOWED_HOSTS", "github.com,*.atlassian.com");
    env_set(&env, "CREDEX_OAUTH_HTTP_TIMEOUT_MS", "60000");
    env_set(&env, "CREDEX_OAUTH_HTTP_MAX_RESPONSE_BYTES", "1024");
    env_set(&env, "CREDEX_OAUTH_REFRESH_LEASE_MS", "90000");

    cx_config_t *cfg = load_ok(&env);
    assert_true(cfg->credentials_enabled);
    assert_true(cfg->exchange_enabled);
    assert_true(cfg->bootstrap_oauth_connectors);
    assert_true(cfg->use_impersonation_tokens);
    assert_string_equal(cfg->store_backend, "mongodb-envelope");
    assert_int_equal(cfg->key_provider, CX_KEY_PROVIDER_AWS_KMS);
    assert_string_equal(cfg->kms_cmk_id, "arn:aws:kms:us-west-2:123456789012:key/abc");
    assert_string_equal(cfg->kms_region, "us-west-2");
    assert_string_equal(cfg->kms_endpoint, "https://vpce-1.kms.us-west-2.vpce.amazonaws.com");
    assert_string_equal(cfg->sts_endpoint, "https://sts.us-west-2.amazonaws.com/");
    assert_string_equal(cfg->kms_ca_file, "/etc/credex/aws-ca.pem");
    assert_int_equal(cfg->kms_timeout_ms, 60000);
    assert_true(cfg->production);
    assert_int_equal(cfg->log_level, CX_LOG_DEBUG);
    assert_string_equal(cfg->addr[CX_SVC_KEYWRAP], "keywrap:443");
    assert_string_equal(cfg->addr[CX_SVC_STORE], "10.0.0.2:0");
    assert_string_equal(cfg->addr[CX_SVC_OAUTH], "[::1]:7203");
    assert_string_equal(cfg->addr[CX_SVC_GATEWAY], "0.0.0.0:65535");
    assert_string_equal(cfg->addr[CX_SVC_EDGE], "edge.credex.svc.cluster.local:7205");
    assert_string_equal(cfg->edge_http_addr, "[::]:8443");
    assert_string_equal(cfg->tls_ca, "/etc/credex/ca.pem");
    assert_string_equal(cfg->tls_cert, "/etc/credex/store.pem");
    assert_string_equal(cfg->tls_key, "/etc/credex/store-key.pem");
    assert_string_equal(cfg->trust_domain, "prod.example");
    assert_int_equal(cfg->rpc_threads, 256);
    assert_int_equal(cfg->rpc_threads_max, 1024);
    assert_int_equal(cfg->rpc_max_message_bytes, 1024);
    assert_int_equal(cfg->rpc_max_metadata_bytes, 1048576);
    assert_int_equal(cfg->rpc_max_deadline_ms, 600000);
    assert_int_equal(cfg->rpc_default_deadline_ms, 10);
    assert_int_equal(cfg->shutdown_grace_ms, 0);
    assert_string_equal(cfg->mongo_uri, "mongodb+srv://cluster0.example.net/?retryWrites=true");
    assert_string_equal(cfg->mongo_db, "caipe");
    assert_string_equal(cfg->openfga_url, "https://fga.example:8443");
    assert_string_equal(cfg->openfga_store_id, "01HXSTORE");
    assert_string_equal(cfg->openfga_model_id, "01HXMODEL");
    assert_string_equal(cfg->jwks, "https://kc.example/realms/caipe/protocol/openid-connect/certs");
    assert_string_equal(cfg->jwt_issuer, "https://kc.example/realms/caipe");
    assert_string_equal(cfg->jwt_audience, "credex-api");
    assert_string_equal(cfg->local_cmk_key_file, "/var/lib/credex/cmk.key");
    assert_int_equal(cfg->edge_http_threads, 256);
    assert_int_equal(cfg->edge_max_body_bytes, 4194304);
    assert_int_equal(cfg->edge_max_header_bytes, 1024);
    assert_int_equal(cfg->edge_max_connections, 65536);
    assert_int_equal(cfg->edge_max_connections_per_ip, 0);
    assert_int_equal(cfg->edge_idle_timeout_s, 3600);
    assert_int_equal(cfg->edge_request_timeout_ms, 100);
    assert_string_equal(cfg->edge_tls_cert, "/etc/credex/edge-https.pem");
    assert_string_equal(cfg->edge_tls_key, "/etc/credex/edge-https.key");
    assert_string_equal(cfg->edge_allowed_origins, "https://ui.example, http://localhost:3000");
    assert_true(cfg->edge_allow_same_site);
    assert_string_equal(cfg->oauth_ca_file, "/etc/credex/providers-ca.pem");
    assert_string_equal(cfg->oauth_allowed_hosts, "github.com,*.atlassian.com");
    assert_int_equal(cfg->oauth_http_timeout_ms, 60000);
    assert_int_equal(cfg->oauth_http_max_response_bytes, 1024);
    assert_int_equal(cfg->oauth_refresh_lease_ms, 90000);
    assert_int_equal(cfg->oauth_test_refresh_pause_ms, 0);
    cx_config_free(cfg);
}

static void test_every_documented_variable_is_read(void **state)
{
    (void)state;
    /* 87 variables in cx_config.h; a forgotten one would keep its default silently. */
    fake_env_t env = {0};
    cx_config_t *cfg = load_ok(&env);
    assert_int_equal(env.lookups, 87);
    cx_config_free(cfg);
}

static void test_store_and_gateway_tuning(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = load_ok(&env);
    assert_true(cfg->mongo_write_majority); /* majority unless told otherwise */
    assert_int_equal(cfg->mongo_timeout_ms, 3000);
    assert_int_equal(cfg->dek_cache_ttl_ms, 60000);
    assert_int_equal(cfg->dek_cache_max_uses, 1000);
    assert_int_equal(cfg->jwt_leeway_s, 30);
    assert_int_equal(cfg->openfga_timeout_ms, 2000);
    assert_int_equal(cfg->openfga_cache_ttl_ms, 10000);
    assert_int_equal(cfg->openfga_watch_ms, 100);
    assert_int_equal(cfg->jwt_cache_max_entries, 4096);
    assert_int_equal(cfg->payload_cache_max_entries, 4096);
    assert_int_equal(cfg->payload_cache_ttl_ms, 300000);
    assert_int_equal(cfg->audit_batch_max, 64);
    assert_int_equal(cfg->meta_cache_max_entries, 4096);
    assert_int_equal(cfg->meta_cache_bound_ms, 300);
    assert_int_equal(cfg->meta_cache_poll_ms, 100);
    assert_int_equal(cfg->jwks_timeout_ms, 3000);
    assert_string_equal(cfg->jwks_ca_file, "");
    cx_config_free(cfg);
    fake_env_t env2 = {0};
    env_set(&env2, "CREDEX_MONGO_WRITE_CONCERN", "1");
    env_set(&env2, "CREDEX_DEK_CACHE_TTL_MS", "0");
    env_set(&env2, "CREDEX_OPENFGA_CACHE_TTL_MS", "0");
    env_set(&env2, "CREDEX_AUDIT_BATCH_MAX", "1");
    cfg = load_ok(&env2);
    assert_int_equal(cfg->openfga_cache_ttl_ms, 0);
    assert_int_equal(cfg->audit_batch_max, 1);
    assert_false(cfg->mongo_write_majority);
    assert_int_equal(cfg->dek_cache_ttl_ms, 0);
    cx_config_free(cfg);
}

static void test_production_with_local_cmk_loads(void **state)
{
    (void)state;
    /* Not a config error: keywrap reports it through health. */
    fake_env_t env = {0};
    env_set(&env, "CREDEX_PRODUCTION", "true");
    env_set(&env, "CREDENTIAL_KEY_PROVIDER", "local-cmk");
    cx_config_t *cfg = load_ok(&env);
    assert_true(cfg->production);
    assert_int_equal(cfg->key_provider, CX_KEY_PROVIDER_LOCAL_CMK);
    cx_config_free(cfg);
}

static void test_key_provider_aliases(void **state)
{
    (void)state;
    static const struct {
        const char *v;
        cx_key_provider_t want;
    } cases[] = {{"local-cmk", CX_KEY_PROVIDER_LOCAL_CMK},
                 {"dev-local", CX_KEY_PROVIDER_LOCAL_CMK},
                 {"aws-kms", CX_KEY_PROVIDER_AWS_KMS}};
    for (size_t i = 0; i < 3; i++) {
        fake_env_t env = {0};
        env_set(&env, "CREDENTIAL_KEY_PROVIDER", cases[i].v);
        cx_config_t *cfg = load_ok(&env);
        assert_int_equal(cfg->key_provider, cases[i].want);
        cx_config_free(cfg);
    }
}

static void test_log_levels(void **state)
{
    (void)state;
    static const char *const names[] = {"debug", "info", "warn", "error"};
    for (size_t i = 0; i < 4; i++) {
        fake_env_t env = {0};
        env_set(&env, "CREDEX_LOG_LEVEL", names[i]);
        cx_config_t *cfg = load_ok(&env);
        assert_int_equal(cfg->log_level, (cx_log_level_t)i);
        cx_config_free(cfg);
    }
}

/* ---- messages for bad values ----------------------------------------------------------- */

static void test_bad_enum_messages(void **state)
{
    (void)state;
    expect_load_error("CREDENTIAL_KEY_PROVIDER", "kms",
                      "CREDENTIAL_KEY_PROVIDER: expected one of local-cmk|dev-local|aws-kms, got "
                      "\"kms\"");
    expect_load_error("CREDENTIAL_KEY_PROVIDER", "AWS-KMS",
                      "CREDENTIAL_KEY_PROVIDER: expected one of local-cmk|dev-local|aws-kms, got "
                      "\"AWS-KMS\"");
    expect_load_error("CREDENTIAL_STORE_BACKEND", "openbao",
                      "CREDENTIAL_STORE_BACKEND: expected one of mongodb-envelope, got "
                      "\"openbao\"");
    expect_load_error("CREDEX_LOG_LEVEL", "verbose",
                      "CREDEX_LOG_LEVEL: expected one of debug|info|warn|error, got \"verbose\"");
}

static void test_bad_bool_messages(void **state)
{
    (void)state;
    expect_load_error("CAIPE_CREDENTIALS_ENABLED", "maybe",
                      "CAIPE_CREDENTIALS_ENABLED: expected true|false|1|0|yes|no, got \"maybe\"");
    expect_load_error("CREDEX_PRODUCTION", "on",
                      "CREDEX_PRODUCTION: expected true|false|1|0|yes|no, got \"on\"");
    expect_load_error("USE_IMPERSONATION_TOKENS", "2",
                      "USE_IMPERSONATION_TOKENS: expected true|false|1|0|yes|no, got \"2\"");
}

static void test_bad_integer_messages(void **state)
{
    (void)state;
    expect_load_error("CREDEX_RPC_THREADS", "zero",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"zero\"");
    expect_load_error("CREDEX_RPC_THREADS", "0",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"0\"");
    expect_load_error("CREDEX_RPC_THREADS", "257",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"257\"");
    expect_load_error("CREDEX_RPC_THREADS_MAX", "1025",
                      "CREDEX_RPC_THREADS_MAX: expected an integer in 1..1024, got \"1025\"");
    expect_load_error("CREDEX_RPC_THREADS", "-1",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"-1\"");
    expect_load_error("CREDEX_RPC_THREADS", " 8",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got \" 8\"");
    expect_load_error("CREDEX_RPC_MAX_MESSAGE_BYTES", "4MiB",
                      "CREDEX_RPC_MAX_MESSAGE_BYTES: expected an integer in 1024..67108864, got "
                      "\"4MiB\"");
    expect_load_error("CREDEX_SHUTDOWN_GRACE_MS", "99999999999999999999999",
                      "CREDEX_SHUTDOWN_GRACE_MS: expected an integer in 0..600000, got "
                      "\"99999999999999999999999\"");
}

typedef struct range_case {
    const char *name;
    uint64_t min, max;
} range_case_t;

static void test_integer_bounds(void **state)
{
    (void)state;
    static const range_case_t ranges[] = {
        {"CREDEX_RPC_THREADS", 1, 256},
        {"CREDEX_RPC_MAX_MESSAGE_BYTES", 1024, 67108864},
        {"CREDEX_RPC_MAX_METADATA_BYTES", 1024, 1048576},
        {"CREDEX_RPC_MAX_DEADLINE_MS", 100, 600000},
        {"CREDEX_RPC_DEADLINE_MS", 10, 600000},
        {"CREDEX_SHUTDOWN_GRACE_MS", 0, 600000},
        {"CREDEX_EDGE_HTTP_THREADS", 1, 256},
        {"CREDEX_EDGE_HTTP_MAX_BODY_BYTES", 1024, 4194304},
        {"CREDEX_EDGE_HTTP_MAX_HEADER_BYTES", 1024, 65536},
        {"CREDEX_EDGE_HTTP_MAX_CONNECTIONS", 1, 65536},
        {"CREDEX_EDGE_HTTP_MAX_CONNECTIONS_PER_IP", 0, 65536},
        {"CREDEX_EDGE_HTTP_IDLE_TIMEOUT_S", 1, 3600},
        {"CREDEX_EDGE_HTTP_REQUEST_TIMEOUT_MS", 100, 600000},
        {"CREDEX_STORE_METADATA_CACHE_ENTRIES", 0, 1000000},
    };
    for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
        char lo[32], hi[32], below[32], above[32], msg[CX_ERROR_MESSAGE_MAX];
        snprintf(lo, sizeof(lo), "%" PRIu64, ranges[i].min);
        snprintf(hi, sizeof(hi), "%" PRIu64, ranges[i].max);
        snprintf(below, sizeof(below), "%" PRIu64, ranges[i].min - 1);
        snprintf(above, sizeof(above), "%" PRIu64, ranges[i].max + 1);

        fake_env_t env = {0};
        env_set(&env, ranges[i].name, lo);
        /* keep the default deadline below the cap while probing each bound */
        env_set(&env, "CREDEX_RPC_MAX_DEADLINE_MS",
                strcmp(ranges[i].name, "CREDEX_RPC_MAX_DEADLINE_MS") == 0 ? lo : "600000");
        if (strcmp(ranges[i].name, "CREDEX_RPC_MAX_DEADLINE_MS") == 0)
            env_set(&env, "CREDEX_RPC_DEADLINE_MS", "10");
        cx_config_free(load_ok(&env));
        env_set(&env, ranges[i].name, hi);
        cx_config_free(load_ok(&env));

        snprintf(msg, sizeof(msg), "%s: expected an integer in %s..%s, got \"%s\"", ranges[i].name,
                 lo, hi, above);
        expect_load_error(ranges[i].name, above, msg);
        if (ranges[i].min > 0) {
            snprintf(msg, sizeof(msg), "%s: expected an integer in %s..%s, got \"%s\"",
                     ranges[i].name, lo, hi, below);
            expect_load_error(ranges[i].name, below, msg);
        }
    }
}

static void test_deadline_default_above_cap(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_RPC_MAX_DEADLINE_MS", "1000");
    env_set(&env, "CREDEX_RPC_DEADLINE_MS", "2000");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_null(cfg);
    assert_string_equal(err.message, "CREDEX_RPC_DEADLINE_MS: expected at most "
                                     "CREDEX_RPC_MAX_DEADLINE_MS (1000), got 2000");
}

/* The metadata cache's bound and poll period: each in its range, and the poll below the bound
 * (an entry is confirmed once per poll at best). */
static void test_metadata_cache_poll_below_bound(void **state)
{
    (void)state;
    static const struct {
        const char *bound, *poll;
        bool ok;
    } cases[] = {{"20", "10", true},      {"60000", "30000", true}, {"300", "299", true},
                 {"300", "300", false},   {"100", "200", false},    {"19", "10", false},
                 {"60001", "100", false}, {"300", "9", false},      {"60000", "30001", false}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, "CREDEX_STORE_METADATA_CACHE_BOUND_MS", cases[i].bound);
        env_set(&env, "CREDEX_STORE_METADATA_CACHE_POLL_MS", cases[i].poll);
        assert_int_equal(cx_config_load(&cfg, fake_getenv, &env, &err), cases[i].ok);
        if (cases[i].ok) {
            assert_int_equal(cfg->meta_cache_bound_ms, strtoul(cases[i].bound, NULL, 10));
            assert_int_equal(cfg->meta_cache_poll_ms, strtoul(cases[i].poll, NULL, 10));
            cx_config_free(cfg);
        } else {
            assert_null(cfg);
            assert_non_null(strstr(err.message, "CREDEX_STORE_METADATA_CACHE_"));
        }
    }
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_STORE_METADATA_CACHE_BOUND_MS", "100");
    env_set(&env, "CREDEX_STORE_METADATA_CACHE_POLL_MS", "200");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_string_equal(err.message, "CREDEX_STORE_METADATA_CACHE_POLL_MS: expected below "
                                     "CREDEX_STORE_METADATA_CACHE_BOUND_MS (100), got 200");
}

static void test_edge_ui_url(void **state)
{
    (void)state;
    static const char *const good[] = {
        "https://ui.example",     "https://ui.example/",        "https://ui.example:8443/app/x",
        "http://localhost:3000",  "http://localhost/app",       "https://[fd00::1]/a%20b",
        "https://ui.example/a~b", "https://ui.example/a-b_c.d",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        fake_env_t env = {0};
        env_set(&env, "CREDEX_EDGE_UI_URL", good[i]);
        cx_config_t *cfg = load_ok(&env);
        assert_string_equal(cfg->edge_ui_url, good[i]);
        cx_config_free(cfg);
    }
    /* Not https (but a developer's localhost), a query or fragment the appended path would
     * land in, characters a Location header must not carry, not a URL at all. */
    static const char *const bad[] = {
        "ui.example",
        "http://ui.example",
        "http://localhost.evil.example",
        "http://127.0.0.1:3000",
        "https://ui.example/?x=1",
        "https://ui.example#frag",
        "https://ui.example/a b",
        "https://ui.example/a\\b",
        "https://UI.example",
        "https://user@ui.example",
        "javascript:alert(1)",
        "https://",
        "http",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, "CREDEX_EDGE_UI_URL", bad[i]);
        assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
        assert_null(cfg);
        assert_non_null(strstr(err.message, "CREDEX_EDGE_UI_URL: expected https://host"));
    }
    /* production: https only */
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_PRODUCTION", "true");
    env_set(&env, "CREDEX_EDGE_UI_URL", "http://localhost:3000");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_non_null(strstr(err.message, "CREDEX_EDGE_UI_URL: expected an https URL"));
}

static void test_edge_allowed_origins(void **state)
{
    (void)state;
    static const char *const good[] = {
        "https://ui.example",
        "http://localhost:3000",
        "https://a.example,https://b.example:8443",
        " https://a.example , http://127.0.0.1:8080 ",
        "http://[::1]:3000",
        "https://[fd00::1]",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        fake_env_t env = {0};
        env_set(&env, "CREDEX_EDGE_ALLOWED_ORIGINS", good[i]);
        cx_config_t *cfg = load_ok(&env);
        assert_string_equal(cfg->edge_allowed_origins, good[i]);
        cx_config_free(cfg);
    }
    /* What a browser never sends as an Origin (so it could never match), or a wildcard. */
    static const char *const bad[] = {
        "*",
        "null",
        "ui.example",
        "ftp://ui.example",
        "https://ui.example/",
        "https://ui.example/app",
        "https://UI.example",
        "HTTPS://ui.example",
        "https://ui.example:443",
        "http://ui.example:80",
        "https://ui.example:0",
        "https://ui.example:65536",
        "https://ui.example:080",
        "https://ui.example:",
        "https://",
        "https://[]",
        "https://user@ui.example",
        "https://a.example,,https://b.example",
        "https://a.example,",
        "https://ui.example?x=1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, "CREDEX_EDGE_ALLOWED_ORIGINS", bad[i]);
        if (cx_config_load(&cfg, fake_getenv, &env, &err))
            fail_msg("accepted origin list '%s'", bad[i]);
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_non_null(strstr(err.message, "CREDEX_EDGE_ALLOWED_ORIGINS: expected comma-separated "
                                            "origins"));
    }
    /* At most 32 origins. */
    char list[33 * 24] = "";
    for (int i = 0; i < 33; i++) {
        char one[24];
        snprintf(one, sizeof(one), "%shttp://h%d.example", i ? "," : "", i);
        strcat(list, one);
    }
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_EDGE_ALLOWED_ORIGINS", list);
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    *strrchr(list, ',') = '\0';
    cx_config_free(load_ok(&env));
}

/* The provider allow-list and the loopback override are read as common/http reads them. */
static void test_oauth_provider_lists(void **state)
{
    (void)state;
    static const struct {
        const char *name, *value;
    } good[] = {
        {"CREDEX_OAUTH_ALLOWED_HOSTS", "github.com"},
        {"CREDEX_OAUTH_ALLOWED_HOSTS", " github.com , *.atlassian.net,gitlab.example.com. "},
        {"CREDEX_OAUTH_ALLOWED_HOSTS", "a,,b"},
        {"CREDEX_OAUTH_TEST_CONNECT_TO", "github.com:443:127.0.0.1:18443"},
        {"CREDEX_OAUTH_TEST_CONNECT_TO",
         "github.com:443:127.0.0.1:18443, idp.credex.test:443:[::1]:18444"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        fake_env_t env = {0};
        env_set(&env, good[i].name, good[i].value);
        cx_config_t *cfg = load_ok(&env);
        const char *got = strcmp(good[i].name, "CREDEX_OAUTH_ALLOWED_HOSTS") == 0
                              ? cfg->oauth_allowed_hosts
                              : cfg->oauth_test_connect_to;
        assert_string_equal(got, good[i].value);
        cx_config_free(cfg);
    }
    static const char *const bad_hosts[] = {
        "*",
        "github.com:443",
        "https://github.com",
        "git hub.com",
        "gi_thub.com",
        "*github.com",
        "a.*.b",
        "github..com",
        ",",
        "github.com,[::1]",
        "h\xc3\xa9.example",
    };
    for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, "CREDEX_OAUTH_ALLOWED_HOSTS", bad_hosts[i]);
        if (cx_config_load(&cfg, fake_getenv, &env, &err))
            fail_msg("accepted allow-list '%s'", bad_hosts[i]);
        assert_non_null(strstr(err.message, "CREDEX_OAUTH_ALLOWED_HOSTS: expected comma-separated "
                                            "host names"));
    }
    static const char *const bad_targets[] = {
        "github.com:443:10.0.0.1:18443",
        "github.com:443:8.8.8.8:18443",
        "github.com:443:0x7f.1:18443",
        "github.com:443:localhost:18443",
        "github.com:443:127.0.0.1:0",
        "github.com:0:127.0.0.1:18443",
        "github.com:443:127.0.0.1",
        "127.0.0.1:443:127.0.0.1:18443",
        "github.com:443:[fe80::1]:18443",
        "github.com:443:127.0.0.1:18443,x",
        ",",
    };
    for (size_t i = 0; i < sizeof(bad_targets) / sizeof(bad_targets[0]); i++) {
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, "CREDEX_OAUTH_TEST_CONNECT_TO", bad_targets[i]);
        if (cx_config_load(&cfg, fake_getenv, &env, &err))
            fail_msg("accepted override '%s'", bad_targets[i]);
        assert_non_null(strstr(err.message,
                               "CREDEX_OAUTH_TEST_CONNECT_TO: expected comma-separated "
                               "host:port:addr:port2 entries"));
    }
    /* 64 entries at most */
    char list[65 * 24] = "";
    for (int i = 0; i < 65; i++) {
        char one[24];
        snprintf(one, sizeof(one), "%sh%d.example", i ? "," : "", i);
        strcat(list, one);
    }
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_OAUTH_ALLOWED_HOSTS", list);
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    *strrchr(list, ',') = '\0';
    cx_config_free(load_ok(&env));
}

/* The override reaches loopback services: production mode refuses it at start-up. */
static void test_connect_to_refused_in_production(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_OAUTH_TEST_CONNECT_TO", "github.com:443:127.0.0.1:18443");
    env_set(&env, "CREDEX_PRODUCTION", "true");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_null(cfg);
    assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
    assert_string_equal(err.message, "CREDEX_OAUTH_TEST_CONNECT_TO: not allowed with "
                                     "CREDEX_PRODUCTION=true (tests and development only)");
    env_set(&env, "CREDEX_PRODUCTION", "false");
    cfg = load_ok(&env);
    assert_string_equal(cfg->oauth_test_connect_to, "github.com:443:127.0.0.1:18443");
    cx_config_free(cfg);
    env_set(&env, "CREDEX_PRODUCTION", "true");
    env_set(&env, "CREDEX_OAUTH_TEST_CONNECT_TO", "");
    cx_config_free(load_ok(&env));
}

/* The refresh pause stalls a lease holder on purpose: production mode refuses it. */
static void test_refresh_pause_refused_in_production(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS", "2000");
    env_set(&env, "CREDEX_PRODUCTION", "true");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_null(cfg);
    assert_string_equal(err.message, "CREDEX_OAUTH_TEST_REFRESH_PAUSE_MS: not allowed with "
                                     "CREDEX_PRODUCTION=true (tests only)");
    env_set(&env, "CREDEX_PRODUCTION", "false");
    cfg = load_ok(&env);
    assert_int_equal(cfg->oauth_test_refresh_pause_ms, 2000);
    cx_config_free(cfg);
}

/* A lease that can end while its holder still waits for the provider is refused. */
static void test_refresh_lease_above_http_timeout(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = NULL;
    cx_error_t err;
    env_set(&env, "CREDEX_OAUTH_HTTP_TIMEOUT_MS", "10000");
    env_set(&env, "CREDEX_OAUTH_REFRESH_LEASE_MS", "10000");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_null(cfg);
    assert_string_equal(err.message, "CREDEX_OAUTH_REFRESH_LEASE_MS: expected above "
                                     "CREDEX_OAUTH_HTTP_TIMEOUT_MS (10000), got 10000");
    env_set(&env, "CREDEX_OAUTH_REFRESH_LEASE_MS", "10001");
    cfg = load_ok(&env);
    assert_int_equal(cfg->oauth_refresh_lease_ms, 10001);
    cx_config_free(cfg);
    fake_env_t def = {0};
    cfg = load_ok(&def);
    assert_int_equal(cfg->oauth_refresh_lease_ms, 30000);
    cx_config_free(cfg);
}

/* The AWS endpoints: https anywhere, plain http to loopback emulators only and never in
 * production; no path, query or userinfo (requests go to "/"). */
static void test_aws_endpoints(void **state)
{
    (void)state;
    static const char *const names[] = {"CREDEX_KMS_ENDPOINT", "CREDEX_STS_ENDPOINT"};
    static const char *const good[] = {"https://kms.eu-west-1.amazonaws.com",
                                       "https://kms.example:8443/", "http://127.0.0.1:4599",
                                       "http://localhost:8080/", "http://[::1]:9000"};
    static const char *const bad[] = {"http://kms.example:4599",    "http://127.0.0.2:1",
                                      "http://localhost.example:1", "https://kms.example/x",
                                      "https://user@kms.example",   "ftp://kms.example",
                                      "https://KMS.example",        "https://kms.example:443"};
    for (size_t n = 0; n < 2; n++) {
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
            fake_env_t env = {0};
            env_set(&env, names[n], good[i]);
            cx_config_free(load_ok(&env));
        }
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            char msg[512];
            /* userinfo is credential-shaped: never echoed */
            bool hidden = strchr(bad[i], '@') != NULL;
            snprintf(msg, sizeof(msg),
                     "%s: expected https://host[:port] (or http://127.0.0.1|localhost|[::1][:port] "
                     "outside production), lower-case host, no path, got %s%s%s",
                     names[n], hidden ? "" : "\"", hidden ? "(value hidden)" : bad[i],
                     hidden ? "" : "\"");
            expect_load_error(names[n], bad[i], msg);
        }
        fake_env_t env = {0};
        cx_config_t *cfg = NULL;
        cx_error_t err;
        env_set(&env, names[n], "http://127.0.0.1:4599");
        env_set(&env, "CREDEX_PRODUCTION", "true");
        assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
        assert_null(cfg);
        char msg[128];
        snprintf(msg, sizeof(msg), "%s: expected an https URL with CREDEX_PRODUCTION=true",
                 names[n]);
        assert_string_equal(err.message, msg);
        env_set(&env, names[n], "https://kms.internal.example:8443");
        cx_config_free(load_ok(&env));
    }
}

static void test_edge_tls_pair(void **state)
{
    (void)state;
    cx_config_t *cfg = NULL;
    cx_error_t err;
    fake_env_t env = {0};
    env_set(&env, "CREDEX_EDGE_HTTP_TLS_CERT", "/etc/credex/edge.pem");
    assert_false(cx_config_load(&cfg, fake_getenv, &env, &err));
    assert_string_equal(err.message, "CREDEX_EDGE_HTTP_TLS_CERT: expected together with "
                                     "CREDEX_EDGE_HTTP_TLS_KEY (both or neither)");
    fake_env_t env2 = {0};
    env_set(&env2, "CREDEX_EDGE_HTTP_TLS_KEY", "/etc/credex/edge.key");
    assert_false(cx_config_load(&cfg, fake_getenv, &env2, &err));
    assert_string_equal(err.message, "CREDEX_EDGE_HTTP_TLS_KEY: expected together with "
                                     "CREDEX_EDGE_HTTP_TLS_CERT (both or neither)");
    assert_null(cfg);
    env_set(&env2, "CREDEX_EDGE_HTTP_TLS_CERT", "/etc/credex/edge.pem");
    cx_config_free(load_ok(&env2));
}

static void test_addresses(void **state)
{
    (void)state;
    static const char *const names[] = {"CREDEX_KEYWRAP_ADDR", "CREDEX_STORE_ADDR",
                                        "CREDEX_OAUTH_ADDR",   "CREDEX_GATEWAY_ADDR",
                                        "CREDEX_EDGE_ADDR",    "CREDEX_EDGE_HTTP_ADDR"};
    static const char *const bad[] = {
        "7101",     ":7101",       "host:",      "host:65536", "host:-1",
        "host:12a", "host:123456", "[::1:7101",  "[]:7101",    "::1:7101",
        "a b:1",    "host:7101/x", "http://h:1",
    };
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            char msg[CX_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof(msg), "%s: expected host:port with port 0..65535, got \"%s\"",
                     names[n], bad[b]);
            expect_load_error(names[n], bad[b], msg);
        }
    }
}

/* The operations listeners: 127.0.0.1:9101..9105 in the order of the gRPC ports, "off" is off,
 * and anything else must be an address. */
static void test_ops_addresses(void **state)
{
    (void)state;
    static const char *const names[] = {"CREDEX_KEYWRAP_OPS_ADDR", "CREDEX_STORE_OPS_ADDR",
                                        "CREDEX_OAUTH_OPS_ADDR", "CREDEX_GATEWAY_OPS_ADDR",
                                        "CREDEX_EDGE_OPS_ADDR"};
    fake_env_t env = {0};
    cx_config_t *cfg = load_ok(&env);
    assert_string_equal(cfg->ops_addr[CX_SVC_KEYWRAP], "127.0.0.1:9101");
    assert_string_equal(cfg->ops_addr[CX_SVC_STORE], "127.0.0.1:9102");
    assert_string_equal(cfg->ops_addr[CX_SVC_OAUTH], "127.0.0.1:9103");
    assert_string_equal(cfg->ops_addr[CX_SVC_GATEWAY], "127.0.0.1:9104");
    assert_string_equal(cfg->ops_addr[CX_SVC_EDGE], "127.0.0.1:9105");
    cx_config_free(cfg);
    fake_env_t env2 = {0};
    env_set(&env2, "CREDEX_STORE_OPS_ADDR", "off");
    env_set(&env2, "CREDEX_GATEWAY_OPS_ADDR", "0.0.0.0:9000");
    cfg = load_ok(&env2);
    assert_string_equal(cfg->ops_addr[CX_SVC_STORE], "off");
    assert_string_equal(cfg->ops_addr[CX_SVC_GATEWAY], "0.0.0.0:9000");
    cx_config_free(cfg);
    for (size_t n = 0; n < sizeof(names) / sizeof(names[0]); n++) {
        char msg[CX_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof(msg), "%s: expected host:port with port 0..65535 or off, got \"9101\"",
                 names[n]);
        expect_load_error(names[n], "9101", msg);
    }
}

static void test_urls_and_names(void **state)
{
    (void)state;
    expect_load_error("CREDEX_MONGO_URI", "localhost:27017",
                      "CREDEX_MONGO_URI: expected a mongodb:// or mongodb+srv:// URI, got "
                      "\"localhost:27017\"");
    expect_load_error("CREDEX_OPENFGA_URL", "ftp://fga",
                      "CREDEX_OPENFGA_URL: expected an http:// or https:// URL, got \"ftp://fga\"");
    expect_load_error("CREDEX_JWKS", "http://kc/certs",
                      "CREDEX_JWKS: expected a file path or an https:// URL, got "
                      "\"http://kc/certs\"");
    expect_load_error("CREDEX_TRUST_DOMAIN", "Credex.Local",
                      "CREDEX_TRUST_DOMAIN: expected a SPIFFE trust domain of [a-z0-9._-], got "
                      "\"Credex.Local\"");

    fake_env_t env = {0};
    env_set(&env, "CREDEX_JWKS", "/etc/credex/jwks.json");
    cx_config_t *cfg = load_ok(&env);
    assert_string_equal(cfg->jwks, "/etc/credex/jwks.json");
    cx_config_free(cfg);
}

/* Typed tokens (docs/IDENTITY.md): the rule and the name of the client claim. */
static void test_jwt_service_rule(void **state)
{
    (void)state;
    fake_env_t env = {0};
    cx_config_t *cfg = load_ok(&env);
    assert_int_equal(cfg->jwt_service_rule, CX_JWT_RULE_CLIENT_CLAIM);
    assert_string_equal(cfg->jwt_client_claim, "client_id");
    cx_config_free(cfg);
    env_set(&env, "CREDEX_JWT_SERVICE_RULE", "sub_is_client");
    env_set(&env, "CREDEX_JWT_CLIENT_CLAIM", "clientId");
    cfg = load_ok(&env);
    assert_int_equal(cfg->jwt_service_rule, CX_JWT_RULE_SUB_IS_CLIENT);
    assert_string_equal(cfg->jwt_client_claim, "clientId");
    cx_config_free(cfg);

    expect_load_error("CREDEX_JWT_SERVICE_RULE", "azp",
                      "CREDEX_JWT_SERVICE_RULE: expected one of client_claim|sub_is_client, got "
                      "\"azp\"");
    /* a claim every token carries would make every token a service token */
    const char *every[] = {"azp", "sub", "iss", "aud", "exp", "typ"};
    for (size_t i = 0; i < sizeof(every) / sizeof(every[0]); i++) {
        char msg[192];
        snprintf(msg, sizeof(msg),
                 "CREDEX_JWT_CLIENT_CLAIM: expected a claim name of [A-Za-z0-9_.:-], not "
                 "iss/sub/aud/azp/exp/nbf/iat/jti/typ, got \"%s\"",
                 every[i]);
        expect_load_error("CREDEX_JWT_CLIENT_CLAIM", every[i], msg);
    }
    expect_load_error("CREDEX_JWT_CLIENT_CLAIM", "client id",
                      "CREDEX_JWT_CLIENT_CLAIM: expected a claim name of [A-Za-z0-9_.:-], not "
                      "iss/sub/aud/azp/exp/nbf/iat/jti/typ, got \"client id\"");
}

static void test_string_too_long(void **state)
{
    (void)state;
    char v[600];
    memset(v, 'r', sizeof(v));

    v[63] = '\0'; /* kms_region is char[64]: 63 bytes fit */
    fake_env_t env = {0};
    env_set(&env, "CREDENTIAL_KMS_REGION", v);
    cx_config_t *cfg = load_ok(&env);
    assert_int_equal(strlen(cfg->kms_region), 63);
    cx_config_free(cfg);

    v[63] = 'r';
    v[64] = '\0';
    expect_load_error("CREDENTIAL_KMS_REGION", v,
                      "CREDENTIAL_KMS_REGION: expected at most 63 bytes, got 64 bytes");
    memset(v, 'r', sizeof(v));
    memcpy(v, "/tmp/", 5);
    v[599] = '\0';
    expect_load_error("CREDEX_TLS_CA", v,
                      "CREDEX_TLS_CA: expected at most 511 bytes, got 599 bytes");
}

/* ---- never echo secrets ---------------------------------------------------------------- */

static void test_secret_values_hidden(void **state)
{
    (void)state;
    cx_error_t err;
    bool b = true;
    size_t idx = 7;
    uint64_t u = 7;
    static const char *const choices[] = {"a", "b", NULL};

    assert_false(cx_config_parse_bool("GITHUB_CLIENT_SECRET", "hunter2", false, &b, &err));
    assert_string_equal(err.message,
                        "GITHUB_CLIENT_SECRET: expected true|false|1|0|yes|no, got (value hidden)");
    assert_false(cx_config_parse_enum("X_SECRET", "hunter2", choices, 0, &idx, &err));
    assert_string_equal(err.message, "X_SECRET: expected one of a|b, got (value hidden)");
    assert_false(cx_config_parse_uint("PAGERDUTY_CLIENT_SECRET", "hunter2", 0, 1, 0, &u, &err));
    assert_null(strstr(err.message, "hunter2"));
    assert_non_null(strstr(err.message, "(value hidden)"));
    assert_true(b);
    assert_int_equal(idx, 7);
    assert_int_equal(u, 7);
}

static void test_credential_shaped_values_hidden(void **state)
{
    (void)state;
    /* Even under a harmless name, a token pasted into the wrong variable is not echoed. */
    expect_load_error("CREDEX_RPC_THREADS",
                      "ghp_"
                      "1234567890abcdefghijklmnopqrstuvwxyz",
                      "CREDEX_RPC_THREADS: expected an integer in 1..256, got (value hidden)");
    expect_load_error("CREDEX_MONGO_URI", "postgres://admin:pa55word@db:5432/x",
                      "CREDEX_MONGO_URI: expected a mongodb:// or mongodb+srv:// URI, got "
                      "(value hidden)");
    expect_load_error("CREDEX_OPENFGA_URL", "ftp://u:p@host/",
                      "CREDEX_OPENFGA_URL: expected an http:// or https:// URL, got "
                      "(value hidden)");
}

static void test_echo_is_cut_and_printable(void **state)
{
    (void)state;
    char v[200];
    memset(v, 'n', sizeof(v));
    v[sizeof(v) - 1] = '\0';
    expect_load_error("CREDEX_LOG_LEVEL", v,
                      "CREDEX_LOG_LEVEL: expected one of debug|info|warn|error, got "
                      "\"nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn...\"");
    expect_load_error("CREDEX_LOG_LEVEL", "in\nfo\"\\\x1b",
                      "CREDEX_LOG_LEVEL: expected one of debug|info|warn|error, got "
                      "\"in?fo\\\"\\\\?\"");
}

/* ---- building blocks ------------------------------------------------------------------- */

static void test_parse_bool(void **state)
{
    (void)state;
    static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "YES", "Yes"};
    static const char *const no[] = {"false", "FALSE", "0", "no", "NO", "No"};
    bool b;
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        b = false;
        assert_true(cx_config_parse_bool("B", yes[i], false, &b, NULL));
        assert_true(b);
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        b = true;
        assert_true(cx_config_parse_bool("B", no[i], true, &b, NULL));
        assert_false(b);
    }
    b = false;
    assert_true(cx_config_parse_bool("B", NULL, true, &b, NULL));
    assert_true(b);
    assert_true(cx_config_parse_bool("B", "", false, &b, NULL));
    assert_false(b);
    b = true;
    assert_false(cx_config_parse_bool("B", "truee", false, &b, NULL)); /* err may be NULL */
    assert_false(cx_config_parse_bool("B", " true", false, &b, NULL));
    assert_true(b); /* untouched on failure */
}

static void test_parse_uint(void **state)
{
    (void)state;
    uint64_t u = 99;
    cx_error_t err;
    assert_true(cx_config_parse_uint("U", NULL, 1, 10, 5, &u, NULL));
    assert_int_equal(u, 5);
    assert_true(cx_config_parse_uint("U", "10", 1, 10, 5, &u, NULL));
    assert_int_equal(u, 10);
    assert_true(cx_config_parse_uint("U", "0007", 1, 10, 5, &u, NULL));
    assert_int_equal(u, 7);
    assert_true(cx_config_parse_uint("U", "18446744073709551615", 0, UINT64_MAX, 0, &u, NULL));
    assert_true(u == UINT64_MAX);
    u = 3;
    static const char *const bad[] = {"18446744073709551616", "+5", "0x10", "1e3", "5 ", "1.0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(cx_config_parse_uint("U", bad[i], 0, UINT64_MAX, 0, &u, &err));
        assert_int_equal(err.code, CX_ERR_INVALID_ARGUMENT);
        assert_int_equal(strncmp(err.message, "U: expected an integer in 0..18446744073709551615",
                                 strlen("U: expected an integer in 0..18446744073709551615")),
                         0);
    }
    assert_int_equal(u, 3);
}

static void test_parse_str(void **state)
{
    (void)state;
    char out[8];
    cx_error_t err;
    memcpy(out, "keep", 5);
    assert_true(cx_config_parse_str("S", NULL, "def", out, sizeof(out), NULL));
    assert_string_equal(out, "def");
    assert_true(cx_config_parse_str("S", "", NULL, out, sizeof(out), NULL));
    assert_string_equal(out, "");
    assert_true(cx_config_parse_str("S", "1234567", "def", out, sizeof(out), NULL));
    assert_string_equal(out, "1234567");
    memcpy(out, "keep", 5);
    assert_false(cx_config_parse_str("S", "12345678", "def", out, sizeof(out), &err));
    assert_string_equal(err.message, "S: expected at most 7 bytes, got 8 bytes");
    assert_string_equal(out, "keep");
    assert_false(cx_config_parse_str("S_SECRET", "12345678", "d", out, sizeof(out), &err));
    assert_null(strstr(err.message, "12345678"));
}

static void test_parse_enum(void **state)
{
    (void)state;
    static const char *const choices[] = {"red", "green", "blue", NULL};
    size_t idx = 42;
    cx_error_t err;
    assert_true(cx_config_parse_enum("C", NULL, choices, 1, &idx, NULL));
    assert_int_equal(idx, 1);
    assert_true(cx_config_parse_enum("C", "blue", choices, 1, &idx, NULL));
    assert_int_equal(idx, 2);
    idx = 42;
    assert_false(cx_config_parse_enum("C", "Blue", choices, 1, &idx, &err));
    assert_string_equal(err.message, "C: expected one of red|green|blue, got \"Blue\"");
    assert_int_equal(idx, 42);
}

/* ---- misc ------------------------------------------------------------------------------ */

static void test_load_from_process_environment(void **state)
{
    (void)state;
    cx_config_t *cfg = NULL;
    cx_error_t err;
    assert_int_equal(setenv("CREDEX_RPC_THREADS", "17", 1), 0);
    assert_int_equal(setenv("CREDENTIAL_KEY_PROVIDER", "dev-local", 1), 0);
    assert_true(cx_config_load(&cfg, NULL, NULL, &err));
    assert_int_equal(cfg->rpc_threads, 17);
    assert_int_equal(cfg->key_provider, CX_KEY_PROVIDER_LOCAL_CMK);
    cx_config_free(cfg);
    cfg = NULL;
    assert_int_equal(setenv("CREDEX_RPC_THREADS", "many", 1), 0);
    assert_false(cx_config_load(&cfg, NULL, NULL, &err));
    assert_null(cfg);
    assert_string_equal(err.message,
                        "CREDEX_RPC_THREADS: expected an integer in 1..256, got \"many\"");
    unsetenv("CREDEX_RPC_THREADS");
    unsetenv("CREDENTIAL_KEY_PROVIDER");
}

static void test_free_null_and_null_out(void **state)
{
    (void)state;
    cx_error_t err;
    fake_env_t env = {0};
    cx_config_free(NULL);
    assert_false(cx_config_load(NULL, fake_getenv, &env, &err));
    assert_int_equal(err.code, CX_ERR_INTERNAL);
}

static void test_service_names(void **state)
{
    (void)state;
    assert_string_equal(cx_service_name(CX_SVC_KEYWRAP), "keywrap");
    assert_string_equal(cx_service_name(CX_SVC_STORE), "store");
    assert_string_equal(cx_service_name(CX_SVC_OAUTH), "oauth");
    assert_string_equal(cx_service_name(CX_SVC_GATEWAY), "gateway");
    assert_string_equal(cx_service_name(CX_SVC_EDGE), "edge");
    assert_null(cx_service_name(CX_SVC_COUNT_));
    assert_null(cx_service_name((cx_service_t)-1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_empty_values_mean_default),
        cmocka_unit_test(test_every_variable_set),
        cmocka_unit_test(test_every_documented_variable_is_read),
        cmocka_unit_test(test_refresh_pause_refused_in_production),
        cmocka_unit_test(test_refresh_lease_above_http_timeout),
        cmocka_unit_test(test_store_and_gateway_tuning),
        cmocka_unit_test(test_production_with_local_cmk_loads),
        cmocka_unit_test(test_key_provider_aliases),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_bad_enum_messages),
        cmocka_unit_test(test_bad_bool_messages),
        cmocka_unit_test(test_bad_integer_messages),
        cmocka_unit_test(test_integer_bounds),
        cmocka_unit_test(test_deadline_default_above_cap),
        cmocka_unit_test(test_metadata_cache_poll_below_bound),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_ops_addresses),
        cmocka_unit_test(test_edge_allowed_origins),
        cmocka_unit_test(test_edge_ui_url),
        cmocka_unit_test(test_aws_endpoints),
        cmocka_unit_test(test_edge_tls_pair),
        cmocka_unit_test(test_oauth_provider_lists),
        cmocka_unit_test(test_connect_to_refused_in_production),
        cmocka_unit_test(test_urls_and_names),
        cmocka_unit_test(test_jwt_service_rule),
        cmocka_unit_test(test_string_too_long),
        cmocka_unit_test(test_secret_values_hidden),
        cmocka_unit_test(test_credential_shaped_values_hidden),
        cmocka_unit_test(test_echo_is_cut_and_printable),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_uint),
        cmocka_unit_test(test_parse_str),
        cmocka_unit_test(test_parse_enum),
        cmocka_unit_test(test_load_from_process_environment),
        cmocka_unit_test(test_free_null_and_null_out),
        cmocka_unit_test(test_service_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
