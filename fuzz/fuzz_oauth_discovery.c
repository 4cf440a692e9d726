/* Fuzz target: discovery documents of custom OAuth/OIDC connectors, oauth_discovery_parse
 * (services/oauth/discovery.c). Input: the configured issuer, a newline, the document; without
 * a newline the whole input is the document of https://idp.example.com. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz/fuzz_kit.h"
#include "services/oauth/oauth_internal.h"

static void check(bool ok)
{
    if (!ok)
        abort();
}

static bool same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* Every endpoint of an accepted document is a connector URL by the same rules, and https. */
static void endpoint_ok(const char *url, const char *const *allow)
{
    if (!url)
        return;
    check(strncasecmp(url, "https://", 8) == 0);
    check(cx_http_url_check(url, allow, NULL));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const allow[] = {"idp.example.com", "*.example.org", NULL};
    fuzz_part_t parts[2];
    const char *nl = memchr(data, '\n', size);
    char *issuer;
    const uint8_t *body = data;
    size_t blen = size;
    if (nl && fuzz_split(data, size, '\n', parts, 2) == 2) {
        issuer = fuzz_strndup(parts[0].data, parts[0].len);
        body = parts[1].data;
        blen = parts[1].len;
    } else {
        issuer = fuzz_strndup((const uint8_t *)"https://idp.example.com", 23);
    }

    oauth_discovered_t d, sentinel;
    memset(&sentinel, 0xa5, sizeof(sentinel));
    d = sentinel;
    cx_error_t err;
    bool ok = oauth_discovery_parse(issuer, (const char *)body, blen, NULL, &d, &err);
    if (!ok) {
        check(err.code == CX_ERR_INVALID_ARGUMENT || err.code == CX_ERR_SSRF_BLOCKED);
        check(memcmp(&d, &sentinel, sizeof(d)) == 0); /* untouched on failure */
        /* messages are fixed words: an issuer with URL punctuation is never quoted */
        if (strlen(issuer) >= 4 && strpbrk(issuer, ".:/[@"))
            check(strstr(err.message, issuer) == NULL);
    } else {
        /* the issuer is the configured one, byte for byte; the two endpoints every
           authorization-code flow needs are there */
        check(strcmp(d.issuer, issuer) == 0);
        check(d.authorization_url && d.token_url);
        endpoint_ok(d.authorization_url, NULL);
        endpoint_ok(d.token_url, NULL);
        endpoint_ok(d.userinfo_url, NULL);
        endpoint_ok(d.revocation_url, NULL);
        endpoint_ok(d.jwks_uri, NULL);
    }

    /* an allow-list only narrows: accepted with it implies accepted without it, the same */
    oauth_discovered_t a;
    if (oauth_discovery_parse(issuer, (const char *)body, blen, allow, &a, &err)) {
        check(ok);
        check(same(a.issuer, d.issuer) && same(a.token_url, d.token_url) &&
              same(a.authorization_url, d.authorization_url) &&
              same(a.userinfo_url, d.userinfo_url) && same(a.revocation_url, d.revocation_url) &&
              same(a.jwks_uri, d.jwks_uri));
        check(a.pkce_s256 == d.pkce_s256 && a.auth_basic == d.auth_basic &&
              a.auth_post == d.auth_post && a.iss_parameter == d.iss_parameter);
        endpoint_ok(a.authorization_url, allow);
        endpoint_ok(a.token_url, allow);
        endpoint_ok(a.userinfo_url, allow);
        endpoint_ok(a.revocation_url, allow);
        endpoint_ok(a.jwks_uri, allow);
        oauth_discovered_clear(&a);
    }
    if (ok)
        oauth_discovered_clear(&d);
    free(issuer);
    return 0;
}
