/*
 * cx_log: structured JSON-lines logging, one object per line:
 *   {"ts":"2026-11-22T10:00:00.123Z","level":"info","service":"store","event":"secret.create",
 *    "correlation_id":"...","secret_id":"sec_...","ms":3}
 *
 * Credential material cannot be logged through this API, by construction:
 *  - there is no printf-style entry point: an event name and field keys must be string
 *    literals (the macros below concatenate them with "" so anything else fails to compile);
 *  - a value is an identifier-sized string, an integer or a boolean. Secret bytes live in
 *    opaque types (cx_secret_t, later) that no field constructor accepts;
 *  - string values are escaped, capped at CX_LOG_VALUE_MAX bytes, and any value that looks
 *    like a credential (bearer tokens, JWTs, PEM blocks, well-known token prefixes, long
 *    high-entropy strings) is replaced by "[redacted]" before it is written.
 *
 * Keys are unique in every line. cx_log writes ts, level, service, event, correlation_id,
 * trace_id (cx_log_set_trace) and (when fields had to go) dropped_fields itself; those names are
 * reserved: a field named like one is written with the prefix CX_LOG_RESERVED_PREFIX ("service"
 * becomes "field_service"). Of several fields written under one key, the first is kept and the
 * others are dropped and counted in dropped_fields.
 *
 * The logger is one of the two permitted process-wide mutable globals (docs/STYLE.md rule 7).
 * cx_log_init is called once at start-up before any thread exists; cx_log_emit is thread-safe
 * (one write(2) per line, so lines never interleave).
 */
#ifndef CREDEX_COMMON_LOG_CX_LOG_H
#define CREDEX_COMMON_LOG_CX_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum cx_log_level {
    CX_LOG_DEBUG = 0,
    CX_LOG_INFO = 1,
    CX_LOG_WARN = 2,
    CX_LOG_ERROR = 3,
} cx_log_level_t;

#define CX_LOG_VALUE_MAX       200      /* bytes of a string value before truncation */
#define CX_LOG_LINE_MAX        4096     /* a whole line; extra fields are dropped, never split */
#define CX_LOG_RESERVED_PREFIX "field_" /* before a field key that cx_log itself writes */

typedef enum cx_log_type { CX_LOG_T_STR, CX_LOG_T_INT, CX_LOG_T_BOOL } cx_log_type_t;

typedef struct cx_log_field {
    const char *key;
    cx_log_type_t type;
    union {
        const char *s; /* NULL is written as JSON null */
        int64_t i;
        bool b;
    } v;
} cx_log_field_t;

/* Field constructors. Keys must be string literals. */
#define CX_LOG_STR(k, val) ((cx_log_field_t){.key = "" k "", .type = CX_LOG_T_STR, .v.s = (val)})
#define CX_LOG_INT(k, val)                                                                         \
    ((cx_log_field_t){.key = "" k "", .type = CX_LOG_T_INT, .v.i = (int64_t)(val)})
#define CX_LOG_BOOL(k, val) ((cx_log_field_t){.key = "" k "", .type = CX_LOG_T_BOOL, .v.b = (val)})

/* Set the service name, minimum level and output fd (normally 2). Not thread-safe; call once
 * before starting threads. Before init, lines go to fd 2 with service "credex" at INFO. */
void cx_log_init(const char *service, cx_log_level_t min_level, int fd);

/* The W3C trace id (32 lower-case hex digits) of the call the calling thread is working on,
 * written as "trace_id" in every line this thread emits until it is cleared (NULL, or anything
 * that is not such an id). Thread-local; common/rpc sets it around a call's events, the edge
 * around a request. */
#define CX_LOG_TRACE_ID_LEN 32
void cx_log_set_trace(const char *trace_id);

/* Parse "debug"|"info"|"warn"|"error" (case-sensitive). Returns false on anything else. */
bool cx_log_level_parse(const char *s, cx_log_level_t *out);

/* Write one line. event must be a literal (use the macros); correlation_id may be NULL. */
void cx_log_emit(cx_log_level_t level, const char *correlation_id, const char *event,
                 const cx_log_field_t *fields, size_t nfields);

/* Format one line into buf (for tests); returns the length written, excluding the NUL.
 * The line ends with '\n'. Same redaction rules as cx_log_emit. */
size_t cx_log_format(char *buf, size_t bufsz, cx_log_level_t level, const char *correlation_id,
                     const char *event, const cx_log_field_t *fields, size_t nfields);

/* True when the logger would redact this value (exposed for tests and for error messages). */
bool cx_log_value_is_sensitive(const char *value);

#define CX_LOG_FIELDS_(...)  ((const cx_log_field_t[]){__VA_ARGS__})
#define CX_LOG_NFIELDS_(...) (sizeof(CX_LOG_FIELDS_(__VA_ARGS__)) / sizeof(cx_log_field_t))

/* cx_log_info(corr, "event.name", CX_LOG_STR("k", v), ...): at least one field is required;
 * use cx_log_info0 when there are none. */
#define cx_log_at(lvl, corr, event, ...)                                                           \
    cx_log_emit((lvl), (corr), "" event "", CX_LOG_FIELDS_(__VA_ARGS__),                           \
                CX_LOG_NFIELDS_(__VA_ARGS__))
#define cx_log_debug(corr, event, ...) cx_log_at(CX_LOG_DEBUG, corr, event, __VA_ARGS__)
#define cx_log_info(corr, event, ...)  cx_log_at(CX_LOG_INFO, corr, event, __VA_ARGS__)
#define cx_log_warn(corr, event, ...)  cx_log_at(CX_LOG_WARN, corr, event, __VA_ARGS__)
#define cx_log_error(corr, event, ...) cx_log_at(CX_LOG_ERROR, corr, event, __VA_ARGS__)
#define cx_log_info0(corr, event)      cx_log_emit(CX_LOG_INFO, (corr), "" event "", NULL, 0)

#endif
