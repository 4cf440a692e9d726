/*
 * svc: the start-up and shutdown sequence every credex process shares, so that each
 * services/<name>/main.c is a few lines:
 *   block signals -> load config (bad value: one JSON error line, exit 2) -> init logger ->
 *   create the rpc server with limits from the config -> let the service register its gRPC
 *   services -> listen (failure: exit 3) -> wait for SIGTERM/SIGINT -> graceful shutdown ->
 *   service cleanup -> exit 0.
 */
#ifndef CREDEX_COMMON_SVC_SVC_H
#define CREDEX_COMMON_SVC_SVC_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

typedef struct svc_def {
    cx_service_t id;
    /* Register the service's gRPC services on srv; may keep state in *state (freed by cleanup),
     * which handlers then get from rpc_call_context(call). The config outlives the server. */
    bool (*setup)(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
    void (*cleanup)(void *state); /* may be NULL; called after the server stopped */
} svc_def_t;

/* Run a service process to completion; returns the process exit code. */
int svc_main(const svc_def_t *def);

/* Server options derived from the config for a given service (listen address, TLS files,
 * limits, embedded descriptor set, the feature gate). The strings point into cfg. */
rpc_server_options_t svc_server_options(const cx_config_t *cfg, cx_service_t id);

/* The rpc gate every service installs (cfg is the cx_config_t): while credentials are disabled
 * every "/credex.v1." method fails with feature_disabled, implemented or not, except the few
 * that report health (svc.c keeps that list). Thread-safe (reads the immutable config). */
bool svc_feature_gate(void *cfg, const char *method_path, cx_error_t *err);

/* TLS material of this process from the config. */
rpc_tls_t svc_tls(const cx_config_t *cfg);

#endif
