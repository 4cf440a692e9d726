/* edge: the HTTP/JSON translator for the UI over gateway. Serves only health and reflection on
 * gRPC. */
#ifndef CREDEX_SERVICES_EDGE_EDGE_H
#define CREDEX_SERVICES_EDGE_EDGE_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* Register edge's gRPC services on srv (svc_def_t.setup). */
bool edge_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* Release what edge_setup kept (svc_def_t.cleanup). NULL-safe. */
void edge_cleanup(void *state);

#endif
