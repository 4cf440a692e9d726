/* gateway: the policy gateway, the only public gRPC entry. Authenticates callers (mTLS + JWT), asks
 * OpenFGA, then forwards to store and oauth. */
#ifndef CREDEX_SERVICES_GATEWAY_GATEWAY_H
#define CREDEX_SERVICES_GATEWAY_GATEWAY_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* Register gateway's gRPC services on srv (svc_def_t.setup). *state receives the process state;
 * the caller must hand it to rpc_server_set_context before starting the server (svc_main does):
 * handlers find it there. Fails on a bad JWKS source or OpenFGA settings; missing JWT or OpenFGA
 * settings only make every call that needs them fail closed, so that health still answers. */
bool gateway_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* Release what gateway_setup kept (svc_def_t.cleanup). NULL-safe. */
void gateway_cleanup(void *state);

#endif
