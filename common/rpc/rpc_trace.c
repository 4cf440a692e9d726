/*
 * rpc_trace: W3C Trace Context (traceparent) for credex calls. A traceparent is
 *   00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>
 * in lower case, neither id all zeros. Version 00 is the only one accepted: anything else
 * (another version, upper case, a wrong length, a zero id) is ignored and a new trace starts,
 * as the recommendation allows for a header a participant cannot parse. Each served call is a
 * span of its own (a new span id); calls it makes downstream carry its trace id with that span
 * id as their parent, and the flags unchanged.
 */
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/rpc/rpc_internal.h"

/* Ids come from a per-thread splitmix64 seeded once from the kernel: unique and unpredictable
 * enough for trace ids (they are not secrets and guard nothing), without a system call on every
 * call, which measurably slowed the call path. Per thread, so no lock and no shared state. */
static _Thread_local uint64_t trace_rng;
static _Thread_local bool trace_rng_seeded;

static uint64_t trace_rand(void)
{
    if (!trace_rng_seeded) {
        if (getrandom(&trace_rng, sizeof(trace_rng), 0) != (ssize_t)sizeof(trace_rng)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            trace_rng = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u ^ (uint64_t)ts.tv_sec;
        }
        trace_rng_seeded = true;
    }
    uint64_t z = (trace_rng += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static bool trace_hex(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
        nonzero |= c != '0';
    }
    return nonzero;
}

bool rpc_traceparent_parse(const char *s, size_t len, char *trace_id, char *flags)
{
    if (s == NULL || len != RPC_TRACEPARENT_LEN || s[0] != '0' || s[1] != '0' || s[2] != '-' ||
        s[35] != '-' || s[52] != '-' || !trace_hex(s + 3, 32) || !trace_hex(s + 36, 16))
        return false;
    /* The flags may be 00: only their characters are checked. */
    if (!((s[53] >= '0' && s[53] <= '9') || (s[53] >= 'a' && s[53] <= 'f')) ||
        !((s[54] >= '0' && s[54] <= '9') || (s[54] >= 'a' && s[54] <= 'f')))
        return false;
    memcpy(trace_id, s + 3, 32);
    trace_id[32] = '\0';
    flags[0] = s[53];
    flags[1] = s[54];
    flags[2] = '\0';
    return true;
}

void rpc_trace_id_new(char *buf, size_t bufsz)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = bufsz - 1;
    do {
        for (size_t i = 0; i < n; i += 16) {
            uint64_t r = trace_rand();
            for (size_t j = i; j < n && j < i + 16; j++, r >>= 4)
                buf[j] = hex[r & 15];
        }
        buf[n] = '\0';
    } while (!trace_hex(buf, n));
}

void rpc_traceparent_format(char *out, const char *trace_id, const char *span_id, const char *flags)
{
    memcpy(out, "00-", 3);
    memcpy(out + 3, trace_id, 32);
    out[35] = '-';
    memcpy(out + 36, span_id, 16);
    out[52] = '-';
    out[53] = flags[0];
    out[54] = flags[1];
    out[55] = '\0';
}

void rpc_trace_child(const char *incoming, char *traceparent, char *trace_id)
{
    char flags[3] = "00", span[RPC_SPAN_ID_LEN + 1];
    if (incoming == NULL || !rpc_traceparent_parse(incoming, strlen(incoming), trace_id, flags))
        rpc_trace_id_new(trace_id, RPC_TRACE_ID_LEN + 1);
    rpc_trace_id_new(span, sizeof(span));
    rpc_traceparent_format(traceparent, trace_id, span, flags);
}
