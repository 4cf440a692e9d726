/*
 * Compiled by tests/unit/log/CMakeLists.txt with -DCX_CASE=<n>:
 *   0: literals everywhere; must compile (the control);
 *   1: event name from a char * variable; must NOT compile;
 *   2: field key from a char * variable; must NOT compile;
 *   3: event name from a variable through cx_log_info0; must NOT compile.
 * This is how cx_log keeps caller-controlled text out of event names and keys.
 */
#include "common/log/cx_log.h"

int main(void)
{
    const char *value = "sec_01J8ZQ4X7K9M2N3P5R6S7T8V9W";
    (void)value; /* so that no case fails for an unused variable */
#if CX_CASE == 0
    cx_log_info(NULL, "secret.create", CX_LOG_STR("secret_id", value), CX_LOG_INT("ms", 3));
    cx_log_info0(NULL, "service.start");
#elif CX_CASE == 1
    const char *event = "secret.create";
    cx_log_info(NULL, event, CX_LOG_STR("secret_id", value));
#elif CX_CASE == 2
    const char *key = "secret_id";
    cx_log_info(NULL, "secret.create", CX_LOG_STR(key, value));
#elif CX_CASE == 3
    const char *event = "service.start";
    cx_log_info0(NULL, event);
#else
#error "unknown CX_CASE"
#endif
    return 0;
}
