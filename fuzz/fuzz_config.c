/*
 * Fuzz target: configuration (common/config). The input is an environment, one NAME=value per
 * line (the first definition of a name wins), loaded whole by cx_config_load so that rules
 * across variables (production mode, key provider, caches) are reached; every value also goes
 * through each building-block parser.
 * Invariants (abort on violation): a load succeeds iff it hands out a snapshot; a refusal's
 * message is NUL-terminated within the error struct and never repeats a value that may be
 * secret (docs/CONFIGURATION.md: a variable named *_SECRET, a URL with user:password@, what
 * the logger would redact).
 */
#include <stdlib.h>
#include <string.h>

#include "common/config/cx_config.h"
#include "common/log/cx_log.h"
#include "fuzz/fuzz_kit.h"

#define VARS_MAX 128
#define PREFIX   12 /* bytes of a value that must not show: past any quoting and cutting */

typedef struct env {
    size_t n;
    char *name[VARS_MAX];
    char *value[VARS_MAX];
    bool secret[VARS_MAX]; /* secret_like(name, value) */
} env_t;

static const char *lookup(void *ctx, const char *name)
{
    const env_t *e = ctx;
    for (size_t i = 0; i < e->n; i++)
        if (strcmp(e->name[i], name) == 0)
            return e->value[i];
    return NULL;
}

/* May the value be secret, by the documented rules? A URL carries user:password@ when its
 * authority (up to the first '/', '?' or '#' after "://", RFC 3986) holds ':' before '@'. */
static bool secret_like(const char *name, const char *value)
{
    size_t nl = strlen(name);
    const char *auth = strstr(value, "://");
    bool userinfo = false;
    if (auth != NULL) {
        auth += 3;
        const char *at = memchr(auth, '@', strcspn(auth, "/?#"));
        userinfo = at != NULL && memchr(auth, ':', (size_t)(at - auth)) != NULL;
    }
    return (nl >= 7 && strcmp(name + nl - 7, "_SECRET") == 0) || userinfo ||
           cx_log_value_is_sensitive(value);
}

/* Is text part of a value that may be echoed (not secret)? Then a message showing it proves
 * nothing. */
static bool echoable(const env_t *e, const char *text)
{
    for (size_t i = 0; i < e->n; i++)
        if (!e->secret[i] && strstr(e->value[i], text) != NULL)
            return true;
    return false;
}

static void check_refusal(bool ok, const cx_error_t *err, const env_t *e)
{
    if (ok)
        return;
    if (memchr(err->message, '\0', sizeof(err->message)) == NULL)
        abort();
    /* A value is shown only as "<name>: expected <what>, got <shown>": look past the last
     * ", got " (names come first and may hold anything). */
    const char *shown = NULL;
    for (const char *p = err->message; (p = strstr(p, ", got ")) != NULL; p++)
        shown = p + 6;
    for (size_t i = 0; shown != NULL && i < e->n; i++) {
        /* Shown values are quoted: a leak is the quote and the value's first bytes. */
        char head[PREFIX + 2] = "\"";
        if (strlen(e->value[i]) < PREFIX || !e->secret[i])
            continue;
        memcpy(head + 1, e->value[i], PREFIX);
        head[PREFIX + 1] = '\0';
        if (strstr(shown, head) != NULL && !echoable(e, head + 1))
            abort();
    }
}

static void parse_each(char *name, char *v, bool secret)
{
    static const char *const choices[] = {"a", "b", NULL};
    env_t one = {.n = 1, .name = {name}, .value = {v}, .secret = {secret}};
    cx_error_t err;
    bool b;
    uint64_t u;
    char out[64];
    size_t idx;
    check_refusal(cx_config_parse_bool(name, v, false, &b, &err), &err, &one);
    check_refusal(cx_config_parse_uint(name, v, 1, 1000, 5, &u, &err), &err, &one);
    check_refusal(cx_config_parse_str(name, v, "d", out, sizeof(out), &err), &err, &one);
    check_refusal(cx_config_parse_enum(name, v, choices, 0, &idx, &err), &err, &one);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fuzz_part_t lines[VARS_MAX];
    env_t e = {0};
    size_t n = fuzz_split(data, size, '\n', lines, VARS_MAX);
    for (size_t i = 0; i < n; i++) {
        const uint8_t *eq = memchr(lines[i].data, '=', lines[i].len);
        if (eq == NULL)
            continue;
        size_t nl = (size_t)(eq - lines[i].data);
        e.name[e.n] = fuzz_strndup(lines[i].data, nl);
        e.value[e.n] = fuzz_strndup(eq + 1, lines[i].len - nl - 1);
        e.secret[e.n] = secret_like(e.name[e.n], e.value[e.n]);
        parse_each(e.name[e.n], e.value[e.n], e.secret[e.n]);
        e.n++;
    }
    cx_config_t *cfg = NULL;
    cx_error_t err;
    bool ok = cx_config_load(&cfg, lookup, &e, &err);
    check_refusal(ok, &err, &e);
    if (ok == (cfg == NULL))
        abort();
    cx_config_free(cfg);
    for (size_t i = 0; i < e.n; i++) {
        free(e.name[i]);
        free(e.value[i]);
    }
    return 0;
}
