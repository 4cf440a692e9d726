/*
 * credexctl: argument parsing, validation, file reading and the one way commands call a
 * server. Secret values are read into heap buffers that are wiped before they are freed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "common/contract/cx_contract.h"
#include "tools/credexctl/credexctl.h"

/* ---- argument parsing ------------------------------------------------------------------ */

static const cli_opt_t *find_opt(const cli_opt_t *opts, const char *name, size_t len)
{
    for (const cli_opt_t *o = opts; o->name != NULL; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

bool cli_parse(const char *cmd, int argc, char **argv, const cli_opt_t *opts,
               const char **positional, size_t max_pos, size_t *npos, bool *help)
{
    bool only_positional = false;
    *npos = 0;
    *help = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_positional && strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (!only_positional && (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)) {
            *help = true;
            continue;
        }
        if (!only_positional && strncmp(a, "--", 2) == 0) {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const cli_opt_t *o = find_opt(opts, name, len);
            if (o == NULL) {
                cli_usage_error(cmd, "unknown option --%.*s (see --help)", (int)len, name);
                return false;
            }
            if (o->kind == CLI_OPT_FLAG) {
                if (eq != NULL) {
                    cli_usage_error(cmd, "--%s takes no value", o->name);
                    return false;
                }
                *o->flag = true;
                continue;
            }
            const char *val = eq ? eq + 1 : NULL;
            if (val == NULL) {
                if (i + 1 >= argc) {
                    cli_usage_error(cmd, "--%s needs a value", o->name);
                    return false;
                }
                val = argv[++i];
            }
            if (o->kind == CLI_OPT_VALUE) {
                *o->value = val;
            } else {
                if (*o->list_len >= o->list_max) {
                    cli_usage_error(cmd, "--%s given more than %zu times", o->name, o->list_max);
                    return false;
                }
                o->list[(*o->list_len)++] = val;
            }
            continue;
        }
        if (!only_positional && a[0] == '-' && a[1] != '\0') {
            cli_usage_error(cmd, "unknown option %s (see --help)", a);
            return false;
        }
        if (*npos >= max_pos) {
            cli_usage_error(cmd, "unexpected argument '%s' (see --help)", a);
            return false;
        }
        positional[(*npos)++] = a;
    }
    return true;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "credexctl: usage: %s: %s\n", cmd, msg);
    return CLI_USAGE;
}

int cli_fail(const cx_error_t *err)
{
    fprintf(stderr, "credexctl: %s: %s\n", cx_code_reason(err->code),
            err->message[0] ? err->message : "(no detail)");
    return CLI_FAIL;
}

/* ---- validation ---------------------------------------------------------------------- */

static bool all_in(const char *s, size_t min, size_t max, const char *extra)
{
    size_t n = 0;
    for (const char *p = s; *p; p++, n++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  (c != '\0' && strchr(extra, c) != NULL);
        if (!ok || n >= max)
            return false;
    }
    return n >= min;
}

bool cli_valid_principal(const char *s)
{
    /* Not starting with '-': on a command line such a value is more likely a mistyped option. */
    return s != NULL && s[0] != '-' && cx_contract_check_value("owner_id", s, true, NULL);
}

bool cli_valid_service(const char *s)
{
    return s != NULL && s[0] != '-' && all_in(s, 1, 63, "-");
}

int cli_check_field(const char *cmd, const char *option, const char *field, const char *value)
{
    cx_error_t e;
    if (cx_contract_check_value(field, value, true, &e))
        return CLI_OK;
    /* The contract names the field ("display_name: must be ..."); the user typed an option. */
    const char *rule = e.message;
    size_t flen = strlen(field);
    if (strncmp(rule, field, flen) == 0)
        rule += flen;
    while (*rule == ':' || *rule == ' ')
        rule++;
    return cli_usage_error(cmd, "%s: %s", option, rule);
}

bool cli_parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (s == NULL || *s == '\0' || strlen(s) > 19)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* ---- files ----------------------------------------------------------------------------- */

void cli_wipe_free(void *p, size_t n)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, n);
    free(p);
}

/* Reads at most max+1 bytes from fd into a fresh buffer (so that "too long" is detectable). */
static bool read_fd(int fd, size_t max, unsigned char **out, size_t *outlen, cx_error_t *err)
{
    size_t cap = max + 1, len = 0;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        return cx_error_set(err, CX_ERR_RESOURCE_EXHAUSTED, "out of memory");
    while (len < cap) {
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            cli_wipe_free(buf, cap);
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "read failed: %s", strerror(e));
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    if (len > max) {
        cli_wipe_free(buf, cap);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "input is longer than %zu bytes", max);
    }
    *out = buf;
    *outlen = len;
    return true;
}

bool cli_read_value(const char *path, size_t max, unsigned char **out, size_t *outlen,
                    cx_error_t *err)
{
    int fd = 0;
    if (strcmp(path, "-") != 0) {
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "cannot open value file %s: %s", path,
                                strerror(errno));
    }
    unsigned char *buf = NULL;
    size_t len = 0;
    bool ok = read_fd(fd, max, &buf, &len, err);
    if (fd != 0)
        close(fd);
    if (!ok)
        return false;
    if (len == 0) {
        cli_wipe_free(buf, max + 1);
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "the secret value is empty");
    }
    *out = buf;
    *outlen = len;
    return true;
}

bool cli_read_text_file(const char *path, size_t max, char **out, cx_error_t *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "cannot open %s: %s", path,
                            strerror(errno));
    unsigned char *buf = NULL;
    size_t len = 0;
    bool ok = read_fd(fd, max, &buf, &len, err);
    close(fd);
    if (!ok)
        return false;
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' ' ||
                       buf[len - 1] == '\t'))
        len--;
    buf[len] = '\0';
    *out = (char *)buf;
    return true;
}

void cli_pki_dir(char *buf, size_t bufsz)
{
    const char *run = getenv("CREDEX_RUN_DIR");
    snprintf(buf, bufsz, "%s/pki", run != NULL && *run ? run : ".run");
}

/* ---- calls ------------------------------------------------------------------------------ */

bool cli_call(const cx_config_t *cfg, const cli_conn_t *conn,
              const ProtobufCServiceDescriptor *service, const char *method,
              const ProtobufCMessage *req, const rpc_header_t *headers, size_t nheaders,
              rpc_arena_t *arena, ProtobufCMessage **reply, cx_error_t *err)
{
    const char *addr = conn && conn->addr ? conn->addr : cfg->addr[CX_SVC_GATEWAY];
    const char *peer = conn && conn->peer ? conn->peer : "gateway";
    rpc_tls_t tls = {.ca_file = cfg->tls_ca,
                     .cert_file = conn && conn->cert ? conn->cert : cfg->tls_cert,
                     .key_file = conn && conn->key ? conn->key : cfg->tls_key,
                     .trust_domain = cfg->trust_domain};
    if (tls.ca_file[0] == '\0' || tls.cert_file[0] == '\0' || tls.key_file[0] == '\0')
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "CREDEX_TLS_CA, CREDEX_TLS_CERT and CREDEX_TLS_KEY must be set "
                            "(source .run/env)");
    /* The request contract the gateway applies (common/contract), checked here first so that
     * a request credex would refuse is not sent at all. */
    cx_error_t cerr;
    if (!cx_contract_check(req, &cerr))
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "request: %s", cerr.message);
    rpc_client_t *client = rpc_client_new(addr, peer, &tls, err);
    if (client == NULL)
        return false;
    rpc_call_options_t opts = {
        .deadline_ms = conn && conn->deadline_ms ? conn->deadline_ms : cfg->rpc_default_deadline_ms,
        .headers = headers,
        .nheaders = nheaders};
    bool ok = rpc_client_unary(client, service, method, req, &opts, arena, reply, err);
    rpc_client_free(client);
    return ok;
}
