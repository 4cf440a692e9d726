/* keywrap_aws: AWS credentials and KMS calls of the aws-kms provider (see keywrap_aws.h). */
#include "services/keywrap/keywrap_aws.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/http/cx_http.h"

#define AWS_RESPONSE_MAX    (64 * 1024)
#define AWS_URL_MAX         320
#define AWS_BACKOFF_BASE_MS 50
#define AWS_BACKOFF_CAP_MS  800
#define AWS_STS_DURATION_S  3600
#define AWS_DEK_LEN         32

typedef enum aws_source { AWS_SOURCE_STATIC, AWS_SOURCE_WEB_IDENTITY } aws_source_t;

struct keywrap_aws {
    char region[64];
    char cmk_id[KEYWRAP_AWS_KEY_ID_MAX + 1];
    char kms_url[AWS_URL_MAX];
    char sts_url[AWS_URL_MAX];
    char sigv4[96]; /* "aws:amz:<region>:kms" */
    cx_http_t *kms, *sts;
    aws_source_t source;
    char role_arn[2048];
    char token_file[512];
    char session_name[65];
    /* Current credentials, guarded by mu; refresh_mu serializes STS exchanges. */
    pthread_mutex_t mu, refresh_mu;
    keywrap_aws_creds_t creds;
    bool have_creds;
    atomic_uint_fast64_t exchanges;
    /* DescribeKey cache, guarded by mu. */
    keywrap_aws_health_t health;
    int64_t health_at_mono_ms; /* 0: never */
};

/* ---- small helpers ------------------------------------------------------------------------ */

static int64_t aws_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t aws_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool aws_set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

/* Standard base64 with padding into out (at least 4 * ((len + 2) / 3) + 1 bytes). */
static void aws_b64_encode(const unsigned char *in, size_t len, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* Strict standard base64 (padded, no whitespace) into out; false when malformed or over outsz. */
static bool aws_b64_decode(const char *in, size_t len, unsigned char *out, size_t outsz,
                           size_t *outlen)
{
    if (len == 0 || len % 4 != 0 || len / 4 * 3 > outsz + 2)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        bool pad = c == '=' && i >= len - 2 && (i == len - 1 || in[len - 1] == '=');
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || pad))
            return false;
    }
    unsigned char *tmp = malloc(len / 4 * 3 + 1);
    if (tmp == NULL)
        return false;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)len);
    bool ok = n >= 0;
    size_t pad = (in[len - 1] == '=') + (in[len - 2] == '=');
    size_t real = ok ? (size_t)n - pad : 0;
    if (ok && real <= outsz) {
        memcpy(out, tmp, real);
        *outlen = real;
    } else {
        ok = false;
    }
    cx_crypto_wipe(tmp, len / 4 * 3 + 1);
    free(tmp);
    return ok;
}

/* "https://host[:port]" or with a final '/': always with the final '/'. */
static bool aws_url(char *out, size_t n, const char *configured, const char *service,
                    const char *region)
{
    int w;
    if (aws_set(configured)) {
        size_t l = strlen(configured);
        w = snprintf(out, n, "%s%s", configured, configured[l - 1] == '/' ? "" : "/");
    } else {
        w = snprintf(out, n, "https://%s.%s.amazonaws.com/", service, region);
    }
    return w > 0 && (size_t)w < n;
}

/* ---- credentials -------------------------------------------------------------------------- */

/* The web identity token, re-read at each exchange (the kubelet rotates the file). */
static bool aws_read_token(const keywrap_aws_t *a, char *out, size_t outsz, cx_error_t *err)
{
    int fd = open(a->token_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    size_t len = 0;
    if (fd < 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "AWS_WEB_IDENTITY_TOKEN_FILE: cannot open %s: %s", a->token_file,
                            strerror(errno));
    for (;;) {
        ssize_t r = read(fd, out + len, outsz - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || (len += (size_t)r) == outsz - 1)
            break;
    }
    close(fd);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r' || out[len - 1] == ' '))
        len--;
    out[len] = '\0';
    if (len == 0 || len >= outsz - 1)
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "AWS_WEB_IDENTITY_TOKEN_FILE: %s is empty or longer than %d bytes",
                            a->token_file, KEYWRAP_AWS_TOKEN_MAX);
    return true;
}

/* application/x-www-form-urlencoded value: unreserved characters kept, the rest %XX. */
static bool aws_form_append(char *buf, size_t n, size_t *at, const char *name, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t p = *at;
    int w = snprintf(buf + p, n - p, "%s%s=", p ? "&" : "", name);
    if (w < 0 || (size_t)w >= n - p)
        return false;
    p += (size_t)w;
    for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
        bool keep = (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
                    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.' || *s == '~';
        if (p + (keep ? 1 : 3) >= n)
            return false;
        if (keep) {
            buf[p++] = (char)*s;
        } else {
            buf[p++] = '%';
            buf[p++] = hex[*s >> 4];
            buf[p++] = hex[*s & 15];
        }
    }
    buf[p] = '\0';
    *at = p;
    return true;
}

/* The text of <name>...</name> inside [s, end): exactly one occurrence, or NULL. */
static const char *aws_xml_text(const char *s, const char *end, const char *name, size_t *len)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", name);
    snprintf(close, sizeof(close), "</%s>", name);
    size_t ol = strlen(open), cl = strlen(close);
    const char *found = NULL;
    for (const char *p = s; p + ol <= end; p++) {
        if (memcmp(p, open, ol) != 0)
            continue;
        if (found != NULL)
            return NULL; /* twice: refused rather than picking one */
        found = p + ol;
    }
    if (found == NULL)
        return NULL;
    for (const char *p = found; p + cl <= end; p++) {
        if (*p == '<') {
            if (memcmp(p, close, cl) != 0)
                return NULL; /* markup inside a value */
            *len = (size_t)(p - found);
            return found;
        }
    }
    return NULL;
}

/* Characters AWS uses in keys, secrets and tokens: base64 and a few more, no markup. */
static bool aws_token_chars(const char *v, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = v[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '=' || c == '-' || c == '_' || c == '.'))
            return false;
    }
    return len > 0;
}

static bool aws_copy_field(const char *v, size_t len, char *out, size_t outsz)
{
    if (v == NULL || len >= outsz || !aws_token_chars(v, len))
        return false;
    memcpy(out, v, len);
    out[len] = '\0';
    return true;
}

/* YYYY-MM-DDTHH:MM:SS[.fff...]Z as milliseconds since the epoch. */
static bool aws_iso8601_ms(const char *v, size_t len, int64_t *out)
{
    int y, mo, d, h, mi, s, used = 0;
    char buf[40];
    if (len < 20 || len >= sizeof(buf))
        return false;
    memcpy(buf, v, len);
    buf[len] = '\0';
    if (sscanf(buf, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &used) != 6 ||
        used != 19)
        return false;
    size_t i = 19;
    if (buf[i] == '.')
        for (i++; buf[i] >= '0' && buf[i] <= '9'; i++)
            ;
    if (buf[i] != 'Z' || i + 1 != len || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 ||
        mi > 59 || s > 60 || y < 1970)
        return false;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = s};
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return false;
    *out = (int64_t)t * 1000;
    return true;
}

bool keywrap_aws_sts_parse(const char *xml, size_t len, keywrap_aws_creds_t *out, cx_error_t *err)
{
    keywrap_aws_creds_t c;
    size_t n = 0, l1 = 0, l2 = 0, l3 = 0, l4 = 0;
    const char *end = xml + len;

    if (xml == NULL || len == 0)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "STS: empty answer");
    if (memchr(xml, '\0', len) != NULL)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "STS: malformed answer");
    const char *code = aws_xml_text(xml, end, "Code", &n);
    if (memmem(xml, len, "<ErrorResponse", 14) != NULL) {
        char name[64] = "unknown";
        if (code != NULL && n < sizeof(name) && aws_token_chars(code, n)) {
            memcpy(name, code, n);
            name[n] = '\0';
        }
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "STS refused the web identity exchange (%s): a deployment fault", name);
    }
    /* The section by hand: aws_xml_text refuses markup inside a value. Exactly one. */
    const char *cred = memmem(xml, len, "<Credentials>", 13);
    if (cred == NULL)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "STS: no Credentials in the answer");
    cred += 13;
    const char *cend = memmem(cred, (size_t)(end - cred), "</Credentials>", 14);
    if (cend == NULL || memmem(cred, (size_t)(end - cred), "<Credentials>", 13) != NULL)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "STS: malformed Credentials");
    const char *akid = aws_xml_text(cred, cend, "AccessKeyId", &l1);
    const char *secret = aws_xml_text(cred, cend, "SecretAccessKey", &l2);
    const char *token = aws_xml_text(cred, cend, "SessionToken", &l3);
    const char *exp = aws_xml_text(cred, cend, "Expiration", &l4);
    memset(&c, 0, sizeof(c));
    bool ok = aws_copy_field(akid, l1, c.access_key_id, sizeof(c.access_key_id)) &&
              aws_copy_field(secret, l2, c.secret_access_key, sizeof(c.secret_access_key)) &&
              aws_copy_field(token, l3, c.session_token, sizeof(c.session_token)) && exp != NULL &&
              aws_iso8601_ms(exp, l4, &c.expires_ms);
    if (ok)
        *out = c;
    cx_crypto_wipe(&c, sizeof(c));
    return ok ? true
              : cx_error_set(err, CX_ERR_UNAVAILABLE,
                             "STS: the Credentials of the answer are incomplete or malformed");
}

/* One AssumeRoleWithWebIdentity exchange into *out. Blocks (one HTTP request). */
static bool aws_sts_exchange(keywrap_aws_t *a, keywrap_aws_creds_t *out, cx_error_t *err)
{
    enum { BODY_MAX = 3 * (KEYWRAP_AWS_TOKEN_MAX + 2048 + 64) + 256 };
    char *token = malloc(KEYWRAP_AWS_TOKEN_MAX + 2);
    char *body = malloc(BODY_MAX);
    cx_http_response_t resp = {0};
    char duration[16];
    size_t at = 0;
    bool ok = false;

    if (token == NULL || body == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        goto out;
    }
    if (!aws_read_token(a, token, KEYWRAP_AWS_TOKEN_MAX + 2, err))
        goto out;
    snprintf(duration, sizeof(duration), "%d", AWS_STS_DURATION_S);
    if (!aws_form_append(body, BODY_MAX, &at, "Action", "AssumeRoleWithWebIdentity") ||
        !aws_form_append(body, BODY_MAX, &at, "Version", "2011-06-15") ||
        !aws_form_append(body, BODY_MAX, &at, "RoleArn", a->role_arn) ||
        !aws_form_append(body, BODY_MAX, &at, "RoleSessionName", a->session_name) ||
        !aws_form_append(body, BODY_MAX, &at, "DurationSeconds", duration) ||
        !aws_form_append(body, BODY_MAX, &at, "WebIdentityToken", token)) {
        cx_error_set(err, CX_ERR_INTERNAL, "STS request too large");
        goto out;
    }
    const cx_http_header_t hdrs[] = {
        {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
        {"Accept", "text/xml"},
    };
    const cx_http_request_t req = {.method = "POST",
                                   .url = a->sts_url,
                                   .headers = hdrs,
                                   .nheaders = 2,
                                   .body = body,
                                   .body_len = at};
    atomic_fetch_add(&a->exchanges, 1);
    if (!cx_http_do(a->sts, &req, &resp, err))
        goto out;
    ok = keywrap_aws_sts_parse(resp.body, resp.body_len, out, err);
    if (ok && resp.status != 200) {
        ok = false;
        cx_error_set(err, CX_ERR_UNAVAILABLE, "STS answered HTTP %ld", resp.status);
    }
out:
    if (resp.body != NULL)
        cx_crypto_wipe(resp.body, resp.body_len);
    cx_http_response_free(&resp);
    if (token != NULL)
        cx_crypto_wipe(token, KEYWRAP_AWS_TOKEN_MAX + 2);
    if (body != NULL)
        cx_crypto_wipe(body, BODY_MAX);
    free(token);
    free(body);
    return ok;
}

static bool aws_fresh(const keywrap_aws_t *a, int64_t now)
{
    return a->have_creds && (a->source == AWS_SOURCE_STATIC ||
                             now < a->creds.expires_ms - KEYWRAP_AWS_REFRESH_AHEAD_MS);
}

/* The credentials to sign with, into *out (wipe after use). force: exchange again even if the
 * current ones look fresh (KMS said they expired). */
static bool aws_creds_get(keywrap_aws_t *a, bool force, keywrap_aws_creds_t *out, cx_error_t *err)
{
    pthread_mutex_lock(&a->mu);
    if (!force && aws_fresh(a, aws_wall_ms())) {
        *out = a->creds;
        pthread_mutex_unlock(&a->mu);
        return true;
    }
    pthread_mutex_unlock(&a->mu);
    if (a->source == AWS_SOURCE_STATIC)
        return cx_error_set(err, CX_ERR_UNAVAILABLE, "AWS credentials are not available");

    bool ok = false;
    keywrap_aws_creds_t fresh;
    pthread_mutex_lock(&a->refresh_mu);
    pthread_mutex_lock(&a->mu);
    /* Another thread may have exchanged while this one waited. */
    if (!force && aws_fresh(a, aws_wall_ms())) {
        *out = a->creds;
        pthread_mutex_unlock(&a->mu);
        pthread_mutex_unlock(&a->refresh_mu);
        return true;
    }
    pthread_mutex_unlock(&a->mu);
    cx_error_t xerr;
    cx_error_clear(&xerr);
    bool got = aws_sts_exchange(a, &fresh, &xerr);
    pthread_mutex_lock(&a->mu);
    if (got) {
        a->creds = fresh;
        a->have_creds = true;
    }
    /* A failed refresh ahead of expiry keeps the current credentials while they last. */
    if (a->have_creds && aws_wall_ms() < a->creds.expires_ms && (got || !force)) {
        *out = a->creds;
        ok = true;
    }
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_unlock(&a->refresh_mu);
    cx_crypto_wipe(&fresh, sizeof(fresh));
    if (!ok && xerr.code != CX_OK && err != NULL)
        *err = xerr;
    else if (!ok)
        cx_error_set(err, CX_ERR_UNAVAILABLE,
                     "AWS credentials from STS expired and could not be renewed");
    return ok;
}

/* ---- KMS calls ---------------------------------------------------------------------------- */

static const char *aws_short_type(const char *type)
{
    const char *h = type != NULL ? strrchr(type, '#') : NULL;
    return h != NULL ? h + 1 : type;
}

cx_code_t keywrap_aws_error_code(long status, const char *type, bool *retry, bool *auth)
{
    static const char *const integrity[] = {"InvalidCiphertextException", "IncorrectKeyException",
                                            NULL};
    static const char *const precondition[] = {"DisabledException", "KMSInvalidStateException",
                                               "NotFoundException", "InvalidKeyUsageException",
                                               NULL};
    static const char *const transient[] = {
        "ThrottlingException",        "LimitExceededException",  "KMSInternalException",
        "DependencyTimeoutException", "KeyUnavailableException", "InternalFailure",
        "ServiceUnavailable",         "RequestTimeoutException", NULL};
    static const char *const credentials[] = {"AccessDeniedException",
                                              "UnrecognizedClientException",
                                              "InvalidSignatureException",
                                              "IncompleteSignature",
                                              "SignatureDoesNotMatch",
                                              "MissingAuthenticationToken",
                                              "InvalidClientTokenId",
                                              "ExpiredTokenException",
                                              "NotAuthorized",
                                              NULL};
    const char *t = aws_short_type(type);
    *retry = false;
    *auth = false;
    for (size_t i = 0; t != NULL && integrity[i] != NULL; i++)
        if (strcmp(t, integrity[i]) == 0)
            return CX_ERR_INTEGRITY;
    for (size_t i = 0; t != NULL && precondition[i] != NULL; i++)
        if (strcmp(t, precondition[i]) == 0)
            return CX_ERR_FAILED_PRECONDITION;
    for (size_t i = 0; t != NULL && credentials[i] != NULL; i++)
        if (strcmp(t, credentials[i]) == 0) {
            *auth = true;
            return CX_ERR_UNAVAILABLE;
        }
    bool known_transient = false;
    for (size_t i = 0; t != NULL && transient[i] != NULL; i++)
        known_transient = known_transient || strcmp(t, transient[i]) == 0;
    *retry = known_transient || status >= 500 || status == 429;
    return CX_ERR_UNAVAILABLE;
}

/* Sleep before attempt number `attempt` (1..): full jitter over an exponential step. */
static void aws_backoff(unsigned attempt)
{
    unsigned step = AWS_BACKOFF_BASE_MS << (attempt - 1);
    if (step > AWS_BACKOFF_CAP_MS)
        step = AWS_BACKOFF_CAP_MS;
    uint32_t r = 0;
    if (!cx_crypto_random(&r, sizeof(r), NULL))
        r = (uint32_t)aws_mono_ms();
    unsigned ms = step / 2 + r % (step / 2 + 1);
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A transport failure worth another attempt: the connection did not happen or broke. A
 * timeout is not: another one would outlast the caller's deadline. */
static bool aws_transport_retry(const cx_error_t *e)
{
    return e->code == CX_ERR_UNAVAILABLE &&
           (e->detail == CX_DETAIL_HTTP_CONNECT || e->detail == CX_DETAIL_HTTP_TRANSPORT ||
            e->detail == CX_DETAIL_HTTP_DNS);
}

/* POST one KMS operation with the JSON text of its request and parse its answer into *answer.
 * *auth_fault (may be NULL) says whether KMS refused our credentials. */
static bool aws_kms_send(keywrap_aws_t *a, const char *op, const char *text, size_t text_len,
                         json_t **answer, bool *auth_fault, cx_error_t *err)
{
    char target[64];
    keywrap_aws_creds_t creds;
    cx_http_response_t resp = {0};
    bool ok = false, refreshed = false;

    if (auth_fault != NULL)
        *auth_fault = false;
    snprintf(target, sizeof(target), "TrentService.%s", op);
    for (unsigned attempt = 0;; attempt++) {
        cx_error_t e;
        cx_error_clear(&e);
        if (attempt > 0)
            aws_backoff(attempt);
        if (!aws_creds_get(a, false, &creds, &e)) {
            *err = e;
            goto out;
        }
        cx_http_header_t hdrs[4] = {
            {"Content-Type", "application/x-amz-json-1.1"},
            {"X-Amz-Target", target},
            {"Accept", "application/json"},
            {"X-Amz-Security-Token", creds.session_token},
        };
        const cx_http_sigv4_t sig = {a->sigv4, creds.access_key_id, creds.secret_access_key};
        const cx_http_request_t req = {.method = "POST",
                                       .url = a->kms_url,
                                       .headers = hdrs,
                                       .nheaders = creds.session_token[0] ? 4 : 3,
                                       .body = text,
                                       .body_len = text_len,
                                       .sigv4 = &sig};
        bool sent = cx_http_do(a->kms, &req, &resp, &e);
        cx_crypto_wipe(&creds, sizeof(creds));
        if (!sent) {
            if (aws_transport_retry(&e) && attempt < KEYWRAP_AWS_RETRIES)
                continue;
            cx_error_set_detail(err,
                                e.code == CX_ERR_CANCELLED ? CX_ERR_CANCELLED : CX_ERR_UNAVAILABLE,
                                e.detail, "KMS %s: %s", op, e.message);
            goto out;
        }
        if (resp.status == 200)
            break;
        json_t *ej = json_loadb(resp.body, resp.body_len, 0, NULL);
        const char *type =
            json_is_object(ej) ? json_string_value(json_object_get(ej, "__type")) : NULL;
        char tname[64];
        snprintf(tname, sizeof(tname), "%s",
                 type != NULL && aws_token_chars(aws_short_type(type), strlen(aws_short_type(type)))
                     ? aws_short_type(type)
                     : "no error type");
        json_decref(ej);
        bool retry = false, auth = false;
        cx_code_t code = keywrap_aws_error_code(resp.status, tname, &retry, &auth);
        long status = resp.status;
        cx_crypto_wipe(resp.body, resp.body_len);
        cx_http_response_free(&resp);
        if (retry && attempt < KEYWRAP_AWS_RETRIES)
            continue;
        /* Temporary credentials that KMS finds expired (clock skew, revoked session): one
         * fresh exchange, then the same request again. */
        if (strcmp(tname, "ExpiredTokenException") == 0 && a->source == AWS_SOURCE_WEB_IDENTITY &&
            !refreshed) {
            refreshed = true;
            if (aws_creds_get(a, true, &creds, NULL)) {
                cx_crypto_wipe(&creds, sizeof(creds));
                attempt--; /* not a retry of a transient failure */
                continue;
            }
        }
        if (auth_fault != NULL)
            *auth_fault = auth;
        if (auth)
            cx_error_set(err, code,
                         "KMS %s: KMS refused keywrap's AWS credentials (%s, HTTP %ld): a "
                         "deployment fault (IAM policy, key policy or credentials)",
                         op, tname, status);
        else if (code == CX_ERR_INTEGRITY)
            cx_error_set(err, code,
                         "wrapped key does not authenticate: tampered, swapped, or a different "
                         "encryption context or key id (KMS %s: %s)",
                         op, tname);
        else if (code == CX_ERR_FAILED_PRECONDITION)
            cx_error_set(err, code, "KMS %s: the CMK cannot be used (%s)", op, tname);
        else
            cx_error_set(err, code, "KMS %s failed (%s, HTTP %ld)%s", op, tname, status,
                         retry ? " after retries" : "");
        goto out;
    }
    json_error_t jerr;
    *answer = json_loadb(resp.body, resp.body_len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(*answer)) {
        json_decref(*answer);
        *answer = NULL;
        cx_error_set(err, CX_ERR_UNAVAILABLE, "KMS %s: the answer is not a JSON object", op);
        goto out;
    }
    ok = true;
out:
    if (resp.body != NULL)
        cx_crypto_wipe(resp.body, resp.body_len);
    cx_http_response_free(&resp);
    return ok;
}

/* aws_kms_send with body (a JSON object, consumed). */
static bool aws_kms_call(keywrap_aws_t *a, const char *op, json_t *body, json_t **answer,
                         bool *auth_fault, cx_error_t *err)
{
    char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (text == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    size_t text_len = strlen(text);
    bool ok = aws_kms_send(a, op, text, text_len, answer, auth_fault, err);
    cx_crypto_wipe(text, text_len);
    free(text);
    return ok;
}

/* The encryption context as a JSON object (string to string). */
static json_t *aws_context(const cx_kv_t *ctx, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o != NULL && i < n; i++) {
        if (json_object_set_new(o, ctx[i].key, json_string(ctx[i].value)) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

/* A base64 string member of the answer decoded into out; false when absent or malformed. */
static bool aws_answer_bytes(json_t *ans, const char *name, unsigned char *out, size_t outsz,
                             size_t *len)
{
    json_t *v = json_object_get(ans, name);
    return json_is_string(v) &&
           aws_b64_decode(json_string_value(v), json_string_length(v), out, outsz, len);
}

/* Wipe a string member in place before the answer is freed (it held key material). */
static void aws_answer_wipe(json_t *ans, const char *name)
{
    json_t *v = json_object_get(ans, name);
    if (json_is_string(v))
        cx_crypto_wipe((char *)json_string_value(v), json_string_length(v));
}

static bool aws_answer_key_id(json_t *ans, const char *name, char *out, size_t outsz)
{
    json_t *v = json_object_get(ans, name);
    size_t l = json_is_string(v) ? json_string_length(v) : 0;
    if (l == 0 || l >= outsz || memchr(json_string_value(v), '\0', l) != NULL)
        return false;
    memcpy(out, json_string_value(v), l + 1);
    return true;
}

static bool aws_answer_wrapped(json_t *ans, const char *op, keywrap_aws_wrapped_t *out,
                               cx_error_t *err)
{
    if (!aws_answer_bytes(ans, "CiphertextBlob", out->blob, sizeof(out->blob), &out->len) ||
        !aws_answer_key_id(ans, "KeyId", out->key_id, sizeof(out->key_id)))
        return cx_error_set(err, CX_ERR_UNAVAILABLE,
                            "KMS %s: the answer lacks a well-formed CiphertextBlob (at most %d "
                            "bytes) or KeyId",
                            op, KEYWRAP_AWS_BLOB_MAX);
    return true;
}

static cx_secret_t *aws_answer_plaintext(json_t *ans, const char *op, cx_error_t *err)
{
    unsigned char key[AWS_DEK_LEN + 1];
    size_t len = 0;
    cx_secret_t *dek = NULL;
    if (!aws_answer_bytes(ans, "Plaintext", key, sizeof(key), &len) || len != AWS_DEK_LEN)
        cx_error_set(err, CX_ERR_UNAVAILABLE, "KMS %s: the answer lacks a %d-byte base64 Plaintext",
                     op, AWS_DEK_LEN);
    else if ((dek = cx_secret_from(key, AWS_DEK_LEN)) == NULL)
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    cx_crypto_wipe(key, sizeof(key));
    aws_answer_wipe(ans, "Plaintext");
    return dek;
}

bool keywrap_aws_generate(keywrap_aws_t *a, const cx_kv_t *ctx, size_t n, cx_secret_t **dek,
                          keywrap_aws_wrapped_t *out, cx_error_t *err)
{
    json_t *ans = NULL;
    json_t *body = json_pack("{s:s, s:s, s:o}", "KeyId", a->cmk_id, "KeySpec", "AES_256",
                             "EncryptionContext", aws_context(ctx, n));
    if (body == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    if (!aws_kms_call(a, "GenerateDataKey", body, &ans, NULL, err))
        return false;
    cx_secret_t *k = aws_answer_plaintext(ans, "GenerateDataKey", err);
    bool ok = k != NULL && aws_answer_wrapped(ans, "GenerateDataKey", out, err);
    json_decref(ans);
    if (!ok) {
        cx_secret_free(k);
        return false;
    }
    *dek = k;
    return true;
}

cx_secret_t *keywrap_aws_decrypt(keywrap_aws_t *a, const char *key_id, const unsigned char *blob,
                                 size_t len, const cx_kv_t *ctx, size_t n, cx_error_t *err)
{
    json_t *ans = NULL;
    if (len == 0 || len > KEYWRAP_AWS_BLOB_MAX) {
        cx_error_set(err, CX_ERR_INTEGRITY, "wrapped key: not an aws-kms ciphertext (1..%d bytes)",
                     KEYWRAP_AWS_BLOB_MAX);
        return NULL;
    }
    char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    if (b64 == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    aws_b64_encode(blob, len, b64);
    json_t *body = json_pack("{s:s, s:s, s:o}", "CiphertextBlob", b64, "KeyId", key_id,
                             "EncryptionContext", aws_context(ctx, n));
    free(b64);
    if (body == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    if (!aws_kms_call(a, "Decrypt", body, &ans, NULL, err))
        return NULL;
    cx_secret_t *dek = aws_answer_plaintext(ans, "Decrypt", err);
    json_decref(ans);
    return dek;
}

bool keywrap_aws_reencrypt(keywrap_aws_t *a, const char *key_id, const unsigned char *blob,
                           size_t len, const cx_kv_t *ctx, size_t n, keywrap_aws_wrapped_t *out,
                           cx_error_t *err)
{
    json_t *ans = NULL;
    if (len == 0 || len > KEYWRAP_AWS_BLOB_MAX)
        return cx_error_set(err, CX_ERR_INTEGRITY,
                            "wrapped key: not an aws-kms ciphertext (1..%d bytes)",
                            KEYWRAP_AWS_BLOB_MAX);
    char *b64 = malloc(4 * ((len + 2) / 3) + 1);
    if (b64 == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    aws_b64_encode(blob, len, b64);
    json_t *body =
        json_pack("{s:s, s:s, s:o, s:s, s:o}", "CiphertextBlob", b64, "SourceKeyId", key_id,
                  "SourceEncryptionContext", aws_context(ctx, n), "DestinationKeyId", a->cmk_id,
                  "DestinationEncryptionContext", aws_context(ctx, n));
    free(b64);
    if (body == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    if (!aws_kms_call(a, "ReEncrypt", body, &ans, NULL, err))
        return false;
    bool ok = aws_answer_wrapped(ans, "ReEncrypt", out, err);
    json_decref(ans);
    return ok;
}

bool keywrap_aws_encrypt(keywrap_aws_t *a, const cx_secret_t *dek, const cx_kv_t *ctx, size_t n,
                         keywrap_aws_wrapped_t *out, cx_error_t *err)
{
    static const char head[] = "{\"Plaintext\":\"";
    json_t *ans = NULL;
    bool ok = false;
    json_t *body =
        json_pack("{s:s, s:o}", "KeyId", a->cmk_id, "EncryptionContext", aws_context(ctx, n));
    char *rest = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (rest == NULL || rest[0] != '{' || rest[1] == '}') {
        free(rest);
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    }
    /* The plaintext member is spliced in front of the other members here rather than encoded
     * by jansson, whose growing buffers would leave copies of it behind unwiped: the key is in
     * this one buffer, wiped below. */
    size_t b64len = 4 * ((cx_secret_len(dek) + 2) / 3);
    size_t restlen = strlen(rest + 1);
    size_t len = sizeof(head) - 1 + b64len + 2 + restlen;
    char *text = malloc(len + 1);
    if (text == NULL) {
        free(rest);
        return cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
    }
    memcpy(text, head, sizeof(head) - 1);
    aws_b64_encode(cx_secret_bytes(dek), cx_secret_len(dek), text + sizeof(head) - 1);
    memcpy(text + sizeof(head) - 1 + b64len, "\",", 2);
    memcpy(text + sizeof(head) - 1 + b64len + 2, rest + 1, restlen + 1);
    free(rest);
    if (aws_kms_send(a, "Encrypt", text, len, &ans, NULL, err))
        ok = aws_answer_wrapped(ans, "Encrypt", out, err);
    json_decref(ans);
    cx_crypto_wipe(text, len);
    free(text);
    return ok;
}

void keywrap_aws_describe(keywrap_aws_t *a, keywrap_aws_health_t *out)
{
    pthread_mutex_lock(&a->mu);
    if (a->health_at_mono_ms != 0 &&
        aws_mono_ms() - a->health_at_mono_ms < KEYWRAP_AWS_DESCRIBE_TTL_MS) {
        *out = a->health;
        pthread_mutex_unlock(&a->mu);
        return;
    }
    pthread_mutex_unlock(&a->mu);

    keywrap_aws_health_t h;
    memset(&h, 0, sizeof(h));
    json_t *ans = NULL;
    bool auth = false;
    cx_error_t e;
    cx_error_clear(&e);
    h.checked_at_ms = aws_wall_ms();
    json_t *body = json_pack("{s:s}", "KeyId", a->cmk_id);
    if (body != NULL && aws_kms_call(a, "DescribeKey", body, &ans, &auth, &e)) {
        json_t *md = json_object_get(ans, "KeyMetadata");
        const char *state = json_string_value(json_object_get(md, "KeyState"));
        aws_answer_key_id(md, "Arn", h.key_arn, sizeof(h.key_arn));
        h.healthy = json_is_true(json_object_get(md, "Enabled")) && state != NULL &&
                    strcmp(state, "Enabled") == 0;
        if (h.healthy) {
            snprintf(h.detail, sizeof(h.detail), "AWS KMS key enabled");
        } else {
            snprintf(h.reason, sizeof(h.reason), "%s", cx_code_reason(CX_ERR_FAILED_PRECONDITION));
            snprintf(h.detail, sizeof(h.detail), "the CMK is not enabled (state %.32s)",
                     state != NULL && aws_token_chars(state, strlen(state)) ? state : "unknown");
        }
    } else {
        snprintf(h.reason, sizeof(h.reason), "%s",
                 auth ? cx_code_reason(CX_ERR_PERMISSION_DENIED)
                      : cx_code_reason(e.code != CX_OK ? e.code : CX_ERR_UNAVAILABLE));
        snprintf(h.detail, sizeof(h.detail), "%.159s", e.message);
    }
    json_decref(ans);
    pthread_mutex_lock(&a->mu);
    a->health = h;
    a->health_at_mono_ms = aws_mono_ms();
    pthread_mutex_unlock(&a->mu);
    *out = h;
}

/* ---- life cycle ---------------------------------------------------------------------------- */

keywrap_aws_env_t keywrap_aws_env_from_process(void)
{
    return (keywrap_aws_env_t){
        .access_key_id = getenv("AWS_ACCESS_KEY_ID"),
        .secret_access_key = getenv("AWS_SECRET_ACCESS_KEY"),
        .session_token = getenv("AWS_SESSION_TOKEN"),
        .role_arn = getenv("AWS_ROLE_ARN"),
        .web_identity_token_file = getenv("AWS_WEB_IDENTITY_TOKEN_FILE"),
        .role_session_name = getenv("AWS_ROLE_SESSION_NAME"),
    };
}

static bool aws_region_ok(const char *r)
{
    size_t n = strlen(r);
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
            return false;
    return n > 0 && n < 64;
}

/* Static credentials from the environment, or the web identity settings. */
static bool aws_credentials_setup(keywrap_aws_t *a, const keywrap_aws_env_t *env, cx_error_t *err)
{
    if (aws_set(env->access_key_id) || aws_set(env->secret_access_key)) {
        if (!aws_set(env->access_key_id) || !aws_set(env->secret_access_key))
            return cx_error_set(
                err, CX_ERR_FAILED_PRECONDITION, "aws-kms: %s is set without %s (both or neither)",
                aws_set(env->access_key_id) ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                aws_set(env->access_key_id) ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
        const char *tok = env->session_token != NULL ? env->session_token : "";
        if (strlen(env->access_key_id) >= sizeof(a->creds.access_key_id) ||
            !aws_token_chars(env->access_key_id, strlen(env->access_key_id)) ||
            strlen(env->secret_access_key) >= sizeof(a->creds.secret_access_key) ||
            strlen(tok) >= sizeof(a->creds.session_token) ||
            strpbrk(env->secret_access_key, "\r\n") != NULL || strpbrk(tok, "\r\n") != NULL)
            return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                                "aws-kms: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or "
                                "AWS_SESSION_TOKEN is malformed or too long");
        a->source = AWS_SOURCE_STATIC;
        snprintf(a->creds.access_key_id, sizeof(a->creds.access_key_id), "%s", env->access_key_id);
        snprintf(a->creds.secret_access_key, sizeof(a->creds.secret_access_key), "%s",
                 env->secret_access_key);
        snprintf(a->creds.session_token, sizeof(a->creds.session_token), "%s", tok);
        a->creds.expires_ms = INT64_MAX;
        a->have_creds = true;
        return true;
    }
    if (!aws_set(env->role_arn) || !aws_set(env->web_identity_token_file))
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "aws-kms: no AWS credentials: set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), "
                            "or AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (Kubernetes web "
                            "identity)");
    const char *session =
        aws_set(env->role_session_name) ? env->role_session_name : "credex-keywrap";
    if (strlen(env->role_arn) >= sizeof(a->role_arn) ||
        strlen(env->web_identity_token_file) >= sizeof(a->token_file) ||
        strlen(session) >= sizeof(a->session_name))
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "aws-kms: AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE or "
                            "AWS_ROLE_SESSION_NAME is too long");
    a->source = AWS_SOURCE_WEB_IDENTITY;
    snprintf(a->role_arn, sizeof(a->role_arn), "%s", env->role_arn);
    snprintf(a->token_file, sizeof(a->token_file), "%s", env->web_identity_token_file);
    snprintf(a->session_name, sizeof(a->session_name), "%s", session);
    /* Found at start-up rather than at the first request: the file must be readable. */
    if (access(a->token_file, R_OK) != 0)
        return cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                            "aws-kms: AWS_WEB_IDENTITY_TOKEN_FILE: cannot read %s: %s",
                            a->token_file, strerror(errno));
    return true;
}

keywrap_aws_t *keywrap_aws_new(const cx_config_t *cfg, const keywrap_aws_env_t *env,
                               cx_error_t *err)
{
    keywrap_aws_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->refresh_mu, NULL);
    atomic_init(&a->exchanges, 0);
    if (!aws_region_ok(cfg->kms_region)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDENTIAL_KMS_REGION must be set for aws-kms (an AWS region such as "
                     "eu-west-1)");
        goto out_fail;
    }
    size_t idlen = strnlen(cfg->kms_cmk_id, sizeof(cfg->kms_cmk_id));
    if (idlen == 0 || idlen > KEYWRAP_AWS_KEY_ID_MAX) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDENTIAL_KMS_CMK_ID must be set for aws-kms (key id, key ARN, alias "
                     "name or alias ARN)");
        goto out_fail;
    }
    snprintf(a->region, sizeof(a->region), "%s", cfg->kms_region);
    memcpy(a->cmk_id, cfg->kms_cmk_id, idlen);
    snprintf(a->sigv4, sizeof(a->sigv4), "aws:amz:%s:kms", a->region);
    if (!aws_url(a->kms_url, sizeof(a->kms_url), cfg->kms_endpoint, "kms", a->region) ||
        !aws_url(a->sts_url, sizeof(a->sts_url), cfg->sts_endpoint, "sts", a->region)) {
        cx_error_set(err, CX_ERR_FAILED_PRECONDITION,
                     "CREDEX_KMS_ENDPOINT or "
                     "CREDEX_STS_ENDPOINT is too long");
        goto out_fail;
    }
    if (!aws_credentials_setup(a, env, err))
        goto out_fail;
    cx_http_options_t o = {.name = "AWS KMS",
                           .metrics_target = "kms",
                           .allow_http = strncmp(a->kms_url, "http://", 7) == 0,
                           .ca_file = cfg->kms_ca_file,
                           .timeout_ms = cfg->kms_timeout_ms,
                           .max_response_bytes = AWS_RESPONSE_MAX};
    a->kms = cx_http_new(&o, err);
    if (a->kms == NULL)
        goto out_fail;
    if (a->source == AWS_SOURCE_WEB_IDENTITY) {
        o.name = "AWS STS";
        o.metrics_target = "sts";
        o.allow_http = strncmp(a->sts_url, "http://", 7) == 0;
        a->sts = cx_http_new(&o, err);
        if (a->sts == NULL)
            goto out_fail;
    }
    return a;
out_fail:
    keywrap_aws_free(a);
    return NULL;
}

void keywrap_aws_free(keywrap_aws_t *a)
{
    if (a == NULL)
        return;
    cx_http_free(a->kms);
    cx_http_free(a->sts);
    pthread_mutex_destroy(&a->mu);
    pthread_mutex_destroy(&a->refresh_mu);
    cx_crypto_wipe(a, sizeof(*a));
    free(a);
}

const char *keywrap_aws_region(const keywrap_aws_t *a)
{
    return a->region;
}

const char *keywrap_aws_cmk_id(const keywrap_aws_t *a)
{
    return a->cmk_id;
}

const char *keywrap_aws_credential_source(const keywrap_aws_t *a)
{
    return a->source == AWS_SOURCE_STATIC ? "static" : "web_identity";
}

uint64_t keywrap_aws_sts_exchanges(keywrap_aws_t *a)
{
    return atomic_load(&a->exchanges);
}
