/* keywrap: the root-key boundary. Serves credex.v1.KeyWrap to store (and Describe to gateway for
 * health); owns nothing persistent. */
#ifndef CREDEX_SERVICES_KEYWRAP_KEYWRAP_H
#define CREDEX_SERVICES_KEYWRAP_KEYWRAP_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* Register keywrap's gRPC services on srv (svc_def_t.setup). */
bool keywrap_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* Release what keywrap_setup kept (svc_def_t.cleanup). NULL-safe. */
void keywrap_cleanup(void *state);

#endif
