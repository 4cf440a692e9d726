/*
 * oauth: the <PREFIX>_* variables of the built-in providers -> connector specs (see
 * oauth_internal.h). Pure: the environment is read through a function, nothing is checked
 * beyond presence and size here (oauth_connector_validate judges the values), and no value is
 * ever put in a message.
 *
 * A provider counts as configured when its CLIENT_ID, CLIENT_SECRET or REDIRECT_URI is set
 * (non-empty): _SCOPES or GITLAB_BASE_URL alone are settings without credentials, which an
 * env file may well carry for a provider not in use, and are ignored then.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto/cx_crypto.h"
#include "services/oauth/oauth_internal.h"

#define CLIENT_SECRET_MAX 4096 /* bytes; provider client secrets are tens of bytes */
#define VAR_NAME_MAX      64

static const char *env_get(void *ctx, const char *name)
{
    (void)ctx;
    return getenv(name);
}

static const char *read_var(cx_config_getenv_fn fn, void *ctx, const char *prefix,
                            const char *suffix, char name[VAR_NAME_MAX])
{
    snprintf(name, VAR_NAME_MAX, "%s_%s", prefix, suffix);
    const char *v = fn(ctx, name);
    return v && *v ? v : NULL;
}

/* Copy a value into a fixed field, or name the variable that does not fit. */
static bool copy_var(char *dst, size_t n, const char *v, const char *name, cx_error_t *err)
{
    size_t len = v ? strlen(v) : 0;
    if (len >= n)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is longer than %zu bytes", name,
                            n - 1);
    memcpy(dst, v ? v : "", len);
    dst[len] = '\0';
    return true;
}

/* One provider's spec into *s (zeroed by the caller); *configured false when none of its
 * variables is set. */
static bool read_spec(const oauth_provider_t *p, cx_config_getenv_fn fn, void *ctx,
                      oauth_bootstrap_spec_t *s, bool *configured, cx_error_t *err)
{
    char n_id[VAR_NAME_MAX], n_secret[VAR_NAME_MAX], n_redirect[VAR_NAME_MAX],
        n_scopes[VAR_NAME_MAX], n_base[VAR_NAME_MAX];
    const char *id = read_var(fn, ctx, p->env_prefix, "CLIENT_ID", n_id);
    const char *secret = read_var(fn, ctx, p->env_prefix, "CLIENT_SECRET", n_secret);
    const char *redirect = read_var(fn, ctx, p->env_prefix, "REDIRECT_URI", n_redirect);
    const char *scopes = read_var(fn, ctx, p->env_prefix, "SCOPES", n_scopes);
    const char *base =
        p->base_url_configurable ? read_var(fn, ctx, p->env_prefix, "BASE_URL", n_base) : NULL;
    *configured = id || secret || redirect;
    if (!*configured)
        return true;
    const char *missing = !id ? n_id : !secret ? n_secret : !redirect ? n_redirect : NULL;
    if (!missing && p->scopes_required && !scopes)
        missing = n_scopes;
    if (missing)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT,
                            "%s is not set, but other %s_* variables are", missing, p->env_prefix);
    size_t slen = strlen(secret);
    if (slen > CLIENT_SECRET_MAX)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s is longer than %d bytes", n_secret,
                            CLIENT_SECRET_MAX);
    if (!copy_var(s->client_id, sizeof(s->client_id), id, n_id, err) ||
        !copy_var(s->redirect_uri, sizeof(s->redirect_uri), redirect, n_redirect, err) ||
        !copy_var(s->scopes, sizeof(s->scopes), scopes, n_scopes, err) ||
        (base && !copy_var(s->base_url, sizeof(s->base_url), base, n_base, err)))
        return false;
    s->client_secret = malloc(slen);
    if (!s->client_secret)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    memcpy(s->client_secret, secret, slen);
    s->client_secret_len = slen;
    s->provider = p;
    return true;
}

bool oauth_bootstrap_specs_read(cx_config_getenv_fn fn, void *ctx, oauth_bootstrap_spec_t **specs,
                                size_t *n, cx_error_t *err)
{
    if (!specs || !n)
        return cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "specs and n are required");
    if (!fn)
        fn = env_get;
    size_t np;
    const oauth_provider_t *ps = oauth_providers(&np);
    oauth_bootstrap_spec_t *out = calloc(np, sizeof(*out));
    if (!out)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    size_t count = 0;
    for (size_t i = 0; i < np; i++) {
        bool configured;
        if (!read_spec(&ps[i], fn, ctx, &out[count], &configured, err)) {
            oauth_bootstrap_specs_free(out, count + 1);
            return false;
        }
        if (configured)
            count++;
    }
    *specs = out;
    *n = count;
    return true;
}

void oauth_bootstrap_specs_free(oauth_bootstrap_spec_t *specs, size_t n)
{
    if (!specs)
        return;
    for (size_t i = 0; i < n; i++) {
        if (specs[i].client_secret) {
            cx_crypto_wipe(specs[i].client_secret, specs[i].client_secret_len);
            free(specs[i].client_secret);
        }
        /* the id and redirect URI are not secret, but a freed spec leaves nothing behind */
        cx_crypto_wipe(&specs[i], sizeof(specs[i]));
    }
    free(specs);
}
