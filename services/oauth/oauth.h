/* oauth: OAuth connectors and provider connections. Serves credex.v1.Connectors, Connections and
 * ProviderTokens to gateway only. */
#ifndef CREDEX_SERVICES_OAUTH_OAUTH_H
#define CREDEX_SERVICES_OAUTH_OAUTH_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* Register oauth's gRPC services on srv (svc_def_t.setup). */
bool oauth_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* Release what oauth_setup kept (svc_def_t.cleanup). NULL-safe. */
void oauth_cleanup(void *state);

#endif
