/* svc: shared process lifecycle for the credex services (see svc.h). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/contract/cx_contract.h"
#include "common/log/cx_log.h"
#include "common/ops/cx_ops.h"
#include "common/svc/svc.h"

extern const unsigned char credex_descriptor_set[];
extern const size_t credex_descriptor_set_len;

enum { EXIT_CONFIG = 2, EXIT_START = 3 };

rpc_tls_t svc_tls(const cx_config_t *cfg)
{
    rpc_tls_t t = {.ca_file = cfg->tls_ca,
                   .cert_file = cfg->tls_cert,
                   .key_file = cfg->tls_key,
                   .trust_domain = cfg->trust_domain};
    return t;
}

/* The credex.v1 methods that answer while CAIPE_CREDENTIALS_ENABLED is false: the credential
 * health report and the key wrapper's description it reads. The one list; common.proto and
 * docs/CONFIGURATION.md repeat it. grpc.* services (health, reflection) are never gated. */
static const char *const svc_ungated_methods[] = {
    "/credex.v1.Admin/GetHealth",
    "/credex.v1.KeyWrap/Describe",
};

bool svc_feature_gate(void *cfg, const char *method_path, cx_error_t *err)
{
    const cx_config_t *c = cfg;
    if (c->credentials_enabled || strncmp(method_path, "/credex.v1.", 11) != 0)
        return true;
    for (size_t i = 0; i < sizeof(svc_ungated_methods) / sizeof(svc_ungated_methods[0]); i++)
        if (strcmp(method_path, svc_ungated_methods[i]) == 0)
            return true;
    return cx_error_set(err, CX_ERR_FEATURE_DISABLED,
                        "credentials are disabled (CAIPE_CREDENTIALS_ENABLED=false)");
}

rpc_server_options_t svc_server_options(const cx_config_t *cfg, cx_service_t id)
{
    rpc_server_options_t o = {
        .name = cx_service_name(id),
        .listen_addr = cfg->addr[id],
        .tls = svc_tls(cfg),
        .threads = cfg->rpc_threads,
        .max_threads = cfg->rpc_threads_max,
        .max_message_bytes = cfg->rpc_max_message_bytes,
        .max_metadata_bytes = cfg->rpc_max_metadata_bytes,
        .max_deadline_ms = cfg->rpc_max_deadline_ms,
        .shutdown_grace_ms = cfg->shutdown_grace_ms,
        .descriptor_set = credex_descriptor_set,
        .descriptor_set_len = credex_descriptor_set_len,
        .gate = svc_feature_gate,
        .gate_ctx = (void *)(uintptr_t)cfg,
        /* Every request's strings are UTF-8 without NUL and its varints fit their fields
         * before anything unpacks it (common/contract). */
        .input_check = cx_contract_wire_check,
    };
    return o;
}

static const char *const svc_ops_vars[CX_SVC_COUNT_] = {
    [CX_SVC_KEYWRAP] = "CREDEX_KEYWRAP_OPS_ADDR", [CX_SVC_STORE] = "CREDEX_STORE_OPS_ADDR",
    [CX_SVC_OAUTH] = "CREDEX_OAUTH_OPS_ADDR",     [CX_SVC_GATEWAY] = "CREDEX_GATEWAY_OPS_ADDR",
    [CX_SVC_EDGE] = "CREDEX_EDGE_OPS_ADDR",
};

/* /readyz is the gRPC health state, so that the cluster and gRPC clients never disagree. */
static bool svc_ready(void *srv, char *reason, size_t reasonsz)
{
    return rpc_server_ready(srv, reason, reasonsz);
}

int svc_main(const svc_def_t *def)
{
    cx_error_t err;
    cx_config_t *cfg = NULL;
    rpc_server_t *srv = NULL;
    cx_ops_t *ops = NULL;
    void *state = NULL;
    int rc = EXIT_START;
    const char *name = cx_service_name(def->id);

    rpc_block_signals();
    cx_log_init(name, CX_LOG_INFO, STDERR_FILENO);
    if (!cx_config_load(&cfg, NULL, NULL, &err)) {
        cx_log_error(NULL, "config.invalid", CX_LOG_STR("reason", cx_code_reason(err.code)),
                     CX_LOG_STR("message", err.message));
        return EXIT_CONFIG;
    }
    cx_log_init(name, cfg->log_level, STDERR_FILENO);
    if (cfg->tls_ca[0] == '\0' || cfg->tls_cert[0] == '\0' || cfg->tls_key[0] == '\0') {
        cx_log_error(NULL, "config.invalid",
                     CX_LOG_STR("message", "CREDEX_TLS_CA, CREDEX_TLS_CERT and CREDEX_TLS_KEY "
                                           "must name PEM files (mutual TLS is required)"));
        rc = EXIT_CONFIG;
        goto out;
    }
    rpc_server_options_t opts = svc_server_options(cfg, def->id);
    srv = rpc_server_new(&opts, &err);
    bool ok = srv != NULL && def->setup(srv, cfg, &state, &err);
    if (ok)
        rpc_server_set_context(srv, state); /* handlers reach it with rpc_call_context */
    if (!ok || !rpc_server_start(srv, &err)) {
        cx_log_error(NULL, "server.start_failed", CX_LOG_STR("reason", cx_code_reason(err.code)),
                     CX_LOG_STR("message", err.message));
        goto out;
    }
    if (strcmp(cfg->ops_addr[def->id], "off") != 0 &&
        (ops = cx_ops_start(cfg->ops_addr[def->id], svc_ops_vars[def->id], svc_ready, srv, &err)) ==
            NULL) {
        cx_log_error(NULL, "server.start_failed", CX_LOG_STR("reason", cx_code_reason(err.code)),
                     CX_LOG_STR("message", err.message));
        goto out;
    }
    cx_log_info(NULL, "server.started", CX_LOG_STR("addr", cfg->addr[def->id]),
                CX_LOG_INT("port", rpc_server_port(srv)),
                CX_LOG_INT("ops_port", ops != NULL ? cx_ops_port(ops) : 0),
                CX_LOG_INT("pid", getpid()),
                CX_LOG_BOOL("credentials_enabled", cfg->credentials_enabled));
    int sig = rpc_server_wait_for_signal(srv);
    cx_log_info(NULL, "server.stopped", CX_LOG_INT("signal", sig));
    rc = 0;
out:
    /* After the rpc shutdown (the drain answers /readyz 503), before the server is freed. */
    if (srv != NULL)
        rpc_server_shutdown(srv);
    cx_ops_stop(ops);
    rpc_server_free(srv);
    if (def->cleanup != NULL)
        def->cleanup(state);
    cx_config_free(cfg);
    return rc;
}
