/* rpc_identity: SPIFFE-style peer names, certificate SAN inspection, small I/O and clock helpers.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <grpc/support/log.h>

#include "common/log/cx_log.h"
#include "common/rpc/rpc_internal.h"

#define RPC_FILE_MAX (1 << 20) /* PEM files are a few KiB; anything bigger is a mistake */

bool rpc_identity_from_uri(const char *uri, size_t len, const char *trust_domain, char *name,
                           size_t namesz)
{
    static const char scheme[] = "spiffe://";
    size_t slen = sizeof(scheme) - 1, tlen = strlen(trust_domain);
    if (len <= slen + tlen + 1 || memcmp(uri, scheme, slen) != 0 ||
        memcmp(uri + slen, trust_domain, tlen) != 0 || uri[slen + tlen] != '/')
        return false;
    const char *n = uri + slen + tlen + 1;
    size_t nlen = len - (size_t)(n - uri);
    if (nlen == 0 || nlen > 63 || nlen >= namesz)
        return false;
    for (size_t i = 0; i < nlen; i++) {
        char c = n[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    memcpy(name, n, nlen);
    name[nlen] = '\0';
    return true;
}

bool rpc_identity_from_pem(const char *pem, const char *trust_domain, char *name, size_t namesz)
{
    bool ok = false;
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    GENERAL_NAMES *sans = cert ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    if (sans == NULL)
        goto out;
    int uris = 0;
    const ASN1_IA5STRING *uri = NULL;
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_URI) {
            uris++;
            uri = gn->d.uniformResourceIdentifier;
        }
    }
    if (uris == 1)
        ok = rpc_identity_from_uri((const char *)ASN1_STRING_get0_data(uri),
                                   (size_t)ASN1_STRING_length(uri), trust_domain, name, namesz);
out:
    GENERAL_NAMES_free(sans);
    X509_free(cert);
    BIO_free(bio);
    return ok;
}

char *rpc_read_file(const char *path, cx_error_t *err)
{
    char *buf = NULL;
    FILE *f = NULL;
    struct stat st;
    if (path == NULL || path[0] == '\0') {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "TLS file path is empty");
        return NULL;
    }
    f = fopen(path, "rb");
    if (f == NULL || fstat(fileno(f), &st) != 0) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (st.st_size <= 0 || st.st_size > RPC_FILE_MAX) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "%s: size %lld outside 1..%d", path,
                     (long long)st.st_size, RPC_FILE_MAX);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        cx_error_set(err, CX_ERR_UNAVAILABLE, "cannot read %s", path);
        free(buf);
        buf = NULL;
        goto out;
    }
    buf[st.st_size] = '\0';
out:
    if (f != NULL)
        fclose(f);
    return buf;
}

int64_t rpc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

gpr_timespec rpc_deadline_from_ms(int64_t monotonic_ms)
{
    int64_t left = monotonic_ms - rpc_now_ms();
    if (left < 0)
        left = 0;
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(left, GPR_TIMESPAN));
}

/* Reconnection (clients; servers ignore these). The core's defaults (first retry after 1 s,
 * x1.6 per failure, up to 120 s) make a peer that restarted unusable for seconds after it
 * listens again. Our peers are on loopback or a local network, where a refused connection
 * costs microseconds, so retrying often is cheap:
 *  - first retry after 100 ms, backoff capped at 500 ms: with the core's 20% jitter, a peer
 *    that is back is reconnected within 600 ms, within the 1 s a restart may cost;
 *  - one connection attempt (TCP + TLS handshake) may take up to 1 s (the core calls this the
 *    minimum reconnect backoff; it is really the connect timeout). It bounds an attempt to a
 *    frozen peer (SYN accepted by the kernel, handshake never answered), and is long enough for
 *    a handshake on a loaded machine (under ASan too), which 100 ms is not.
 * Calls are fail-fast (no wait-for-ready): while the channel is in TRANSIENT_FAILURE a call
 * fails UNAVAILABLE at once instead of waiting for its deadline. */
#define RECONNECT_INITIAL_MS 100
#define RECONNECT_MAX_MS     500
#define CONNECT_TIMEOUT_MS   1000

const grpc_channel_args *rpc_channel_args(void)
{
    static grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_HTTP2_BDP_PROBE, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
         .value.integer = RECONNECT_INITIAL_MS},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS,
         .value.integer = RECONNECT_MAX_MS},
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS,
         .value.integer = CONNECT_TIMEOUT_MS},
        {.type = GRPC_ARG_STRING,
         .key = (char *)GRPC_ARG_OPTIMIZATION_TARGET,
         .value.string = (char *)"latency"},
        /* credex serves no channelz: its per-call and per-message counters are work for
         * nobody (shared atomics on every call). */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ENABLE_CHANNELZ, .value.integer = 0},
    };
    _Static_assert(sizeof(args) / sizeof(args[0]) <= RPC_CHANNEL_ARGS_MAX, "RPC_CHANNEL_ARGS_MAX");
    static const grpc_channel_args set = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
    return &set;
}

/* The core's own diagnostics (e.g. "Handshake failed" for a client without a valid certificate)
 * become JSON lines too, so every line a credex process writes is JSON. A peer failing TLS is
 * the peer's problem: warn, not error. */
static void core_log(gpr_log_func_args *args)
{
    cx_log_level_t lvl = args->severity == GPR_LOG_SEVERITY_ERROR ? CX_LOG_WARN : CX_LOG_DEBUG;
    cx_log_at(lvl, NULL, "grpc.core", CX_LOG_STR("file", args->file),
              CX_LOG_INT("line", args->line), CX_LOG_STR("message", args->message));
}

/* OpenSSL frees its global state from an atexit handler unless told not to, and that handler
 * deletes the thread-local key whose destructor frees each thread's error-queue state. gRPC's
 * own threads may still be finishing when the process exits (its shutdown hands some joins to
 * a detached thread); one that ends after the handler has run leaves its state unreferenced,
 * which LeakSanitizer reports as a leak in the sanitized test build (about one stop in fifty).
 * Without the handler, every thread frees its own state when it ends, as it always does while
 * the process runs, and the process's own memory goes back with the process. This has to run
 * before anything initialises OpenSSL, hence a constructor: every binary that talks gRPC links
 * this file (rpc_core_init). */
__attribute__((constructor)) static void openssl_no_atexit(void)
{
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
}

static void core_once(void)
{
    gpr_set_log_function(core_log);
}

void rpc_core_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, core_once);
    grpc_init();
}
