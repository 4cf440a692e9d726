/* store: secret metadata, encrypted payloads, audit events and migration previews in MongoDB.
 * Serves credex.v1.CredentialStore to gateway and oauth only. */
#ifndef CREDEX_SERVICES_STORE_STORE_H
#define CREDEX_SERVICES_STORE_STORE_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* Register store's gRPC services on srv (svc_def_t.setup). */
bool store_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* Release what store_setup kept (svc_def_t.cleanup). NULL-safe. */
void store_cleanup(void *state);

#endif
