/* credexctl backup: backup, verification and restore of a deployment's state
 * (docs/BACKUP_RESTORE.md). Direct MongoDB and OpenFGA access, like `credexctl db`, plus one
 * call to store (CheckDataKeys) that asks whether the deployment's key material unwraps the
 * backup's data keys. */
#ifndef CREDEX_TOOLS_CREDEXCTL_CMD_BACKUP_H
#define CREDEX_TOOLS_CREDEXCTL_CMD_BACKUP_H

#include "common/config/cx_config.h"

/* `credexctl backup create|verify|restore ...`; argv[0] is "backup". Returns 0 when done, 1 on
 * failure (a checksum, the key check, the database, OpenFGA), 2 on a usage error. Blocking:
 * streams every collection and the OpenFGA store; memory stays bounded by one batch of
 * documents plus the key-check sample and, on restore, 32 bytes per backed-up tuple. */
int credexctl_cmd_backup(const cx_config_t *cfg, int argc, char **argv);

#endif
