/* edge: the HTTP/JSON translator for the UI over the gateway (docs/HTTP_API.md). Its gRPC
 * server carries health and reflection only; the HTTP server (CREDEX_EDGE_HTTP_ADDR) is started
 * by edge_setup and stopped by edge_cleanup. The route table is edge_routes.h. */
#ifndef CREDEX_SERVICES_EDGE_EDGE_H
#define CREDEX_SERVICES_EDGE_EDGE_H

#include <stdbool.h>

#include "common/config/cx_config.h"
#include "common/rpc/rpc.h"

/* svc_def_t.setup: connect to the gateway and start the HTTP server (its threads run until
 * edge_cleanup). Fails, naming the variable, when the HTTP address cannot be bound or the TLS
 * files are unusable. Called once, before other threads use jansson. */
bool edge_setup(rpc_server_t *srv, const cx_config_t *cfg, void **state, cx_error_t *err);
/* svc_def_t.cleanup: stop accepting, let in-flight requests finish (each bounded by its gateway
 * deadline), stop the HTTP threads, release the gateway client. NULL-safe. */
void edge_cleanup(void *state);

#endif
