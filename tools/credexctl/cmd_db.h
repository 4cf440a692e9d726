/* credexctl db: database maintenance commands (direct MongoDB access, not the gRPC API). */
#ifndef CREDEX_TOOLS_CREDEXCTL_CMD_DB_H
#define CREDEX_TOOLS_CREDEXCTL_CMD_DB_H

#include "common/config/cx_config.h"

/* `credexctl db init-indexes`: create the credential collections' indexes (docs/DATA_MODEL.md),
 * idempotently, on CREDEX_MONGO_URI / CREDEX_MONGO_DB. Prints one line per index and every
 * "degraded: ..." line on stdout. argv[0] is "db". Returns 0 when done, 1 on failure, 2 on a
 * usage error. Blocking. */
int credexctl_cmd_db(const cx_config_t *cfg, int argc, char **argv);

#endif
