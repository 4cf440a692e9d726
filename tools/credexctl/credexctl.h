/*
 * credexctl internals: what the command files share. Not a library; every function here is
 * used by the single credexctl process.
 *
 * Conventions of every command:
 *  - exit codes CLI_OK (0), CLI_FAIL (1: the call failed or the answer is negative) and
 *    CLI_USAGE (2: bad arguments or configuration);
 *  - errors are one line on stderr, "credexctl: <reason_code>: <message>", and never contain
 *    credential material (secret values, tokens, keys);
 *  - stdout carries the result only: human-readable, or with --json the reply message in the
 *    canonical proto3 JSON mapping (common/pjson; the document grpcurl prints for the same
 *    call); `retrieve` writes the secret value and nothing else (or, with --json, its reply).
 */
#ifndef CREDEX_TOOLS_CREDEXCTL_CREDEXCTL_H
#define CREDEX_TOOLS_CREDEXCTL_CREDEXCTL_H

#include <jansson.h> /* cmd_token.c builds JSON documents */
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/config/cx_config.h"
#include "common/error/cx_error.h"
#include "common/rpc/rpc.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

/* ---- argument parsing ------------------------------------------------------------------ */

typedef enum cli_opt_kind {
    CLI_OPT_FLAG = 0, /* --name; sets *flag = true */
    CLI_OPT_VALUE,    /* --name VALUE or --name=VALUE; sets *value (last one wins) */
    CLI_OPT_LIST,     /* repeatable --name VALUE; appends to list (at most list_max) */
} cli_opt_kind_t;

typedef struct cli_opt {
    const char *name; /* without the leading "--" */
    cli_opt_kind_t kind;
    bool *flag;
    const char **value;
    const char **list;
    size_t *list_len;
    size_t list_max;
} cli_opt_t;

/* Parse argv against opts (terminated by an entry with name NULL). Non-option words go to
 * positional (at most max_pos; their count in *npos). "--help"/"-h" sets *help. A bad option
 * prints a one-line usage error naming `cmd` and returns false. */
bool cli_parse(const char *cmd, int argc, char **argv, const cli_opt_t *opts,
               const char **positional, size_t max_pos, size_t *npos, bool *help);

/* Usage error: "credexctl: usage: <cmd>: <message>" (printf-style), returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Failure: "credexctl: <reason>: <message>", returns CLI_FAIL (CLI_USAGE for
 * CX_ERR_INVALID_ARGUMENT raised locally is the caller's choice). */
int cli_fail(const cx_error_t *err);

/* ---- validation ---------------------------------------------------------------------- */

/* A user or team id: the request contract's rule for principals (as owner_id), and not starting
 * with '-' (a mistyped option). */
bool cli_valid_principal(const char *s);
/* Service identities (the names of the dev PKI's certificates): 1..63 of [a-z0-9-], starting
 * with a letter or digit. */
bool cli_valid_service(const char *s);
/* An option's value against the request contract's rule for the field it fills (common/contract:
 * the rules the gateway applies). CLI_OK, or a usage error naming the option and the rule, never
 * the value. */
int cli_check_field(const char *cmd, const char *option, const char *field, const char *value);
/* Decimal integer in [min, max]. */
bool cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ---- files and secret values ------------------------------------------------------------ */

#define CLI_VALUE_MAX 65536u /* common.proto: secret value 1..65536 bytes */

/* Read a secret value from a file (path "-" = stdin) into a fresh heap buffer; 1..max bytes.
 * The caller wipes and frees it with cli_wipe_free. Errors never quote the content. */
bool cli_read_value(const char *path, size_t max, unsigned char **out, size_t *outlen,
                    cx_error_t *err);
/* Read a small text file (at most max bytes) into a NUL-terminated string, trailing
 * whitespace removed. */
bool cli_read_text_file(const char *path, size_t max, char **out, cx_error_t *err);
void cli_wipe_free(void *p, size_t n); /* NULL-safe */

/* The dev PKI folder: $CREDEX_RUN_DIR/pki (default .run/pki) into buf. */
void cli_pki_dir(char *buf, size_t bufsz);

/* ---- dev tokens (cmd_token.c) ---------------------------------------------------------- */

typedef struct cli_token_spec {
    const char *sub;
    const char *azp; /* NULL: no azp claim */
    unsigned ttl_s;
} cli_token_spec_t;

/* Mint an ES256 JWT with the dev issuer key (docs/IDENTITY.md). *out is heap (free it). */
bool cli_token_mint(const cx_config_t *cfg, const cli_token_spec_t *spec, char **out,
                    cx_error_t *err);

/* ---- gateway calls --------------------------------------------------------------------- */

typedef struct cli_conn {
    const char *addr;     /* default CREDEX_GATEWAY_ADDR */
    const char *peer;     /* default "gateway" */
    const char *cert;     /* default CREDEX_TLS_CERT */
    const char *key;      /* default CREDEX_TLS_KEY */
    unsigned deadline_ms; /* 0: CREDEX_RPC_DEADLINE_MS */
} cli_conn_t;

/* One unary call on a fresh client; the reply lives in arena. headers may be NULL. */
bool cli_call(const cx_config_t *cfg, const cli_conn_t *conn,
              const ProtobufCServiceDescriptor *service, const char *method,
              const ProtobufCMessage *req, const rpc_header_t *headers, size_t nheaders,
              rpc_arena_t *arena, ProtobufCMessage **reply, cx_error_t *err);

/* ---- output (output.c) ----------------------------------------------------------------- */

/* Short lower-case name of an enum value with its prefix removed, e.g. SECRET_KIND_API_KEY ->
 * "api_key"; "unspecified" for 0, "unknown" when out of range. Static storage per call site
 * is NOT used: the result is written into buf. */
const char *cli_enum_name(const ProtobufCEnumDescriptor *desc, int value, char *buf, size_t bufsz);
/* The reverse: "api_key" -> value; false when unknown or "unspecified". */
bool cli_enum_value(const ProtobufCEnumDescriptor *desc, const char *name, int *value);
/* Milliseconds since the epoch as "2026-11-22T21:30:00Z" ("-" for 0). */
const char *cli_time(int64_t ms, char *buf, size_t bufsz);

/* The message in the canonical JSON mapping (common/pjson), indented as grpcurl prints it, and a
 * newline, on stdout through cli_write_stdout; the text is wiped. CLI_OK, or CLI_FAIL with a
 * one-line error (a string field that is not UTF-8, a write error). */
int cli_print_message(const ProtobufCMessage *msg);
/* Flush stdout's buffer, then write len bytes to the stdout file descriptor itself, so that no
 * stdio buffer holds a copy of what may be credential material. False on a write error. */
bool cli_write_stdout(const void *data, size_t len);

/* ---- commands ----------------------------------------------------------------------------- */

int cmd_token(const cx_config_t *cfg, int argc, char **argv);
int cmd_secret(const cx_config_t *cfg, int argc, char **argv);
int cmd_retrieve(const cx_config_t *cfg, int argc, char **argv);
int cmd_health(const cx_config_t *cfg, int argc, char **argv);
int cmd_gateway_health(const cx_config_t *cfg, int argc, char **argv);
int cmd_dev(const cx_config_t *cfg, int argc, char **argv);
/* `keys rewrap` (cmd_keys.c): CMK rotation through store's RewrapDataKeys; argv[0] is the
 * subcommand. Blocking for the whole run (paced by --rate). */
int cmd_keys(const cx_config_t *cfg, int argc, char **argv);

#endif
