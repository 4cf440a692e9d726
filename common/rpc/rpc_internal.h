/*
 * rpc_internal.h: shared by the rpc module's own files only. The gRPC core types appear here
 * and in the rpc_*.c files, nowhere else in credex.
 */
#ifndef CREDEX_COMMON_RPC_RPC_INTERNAL_H
#define CREDEX_COMMON_RPC_RPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/rpc/rpc.h"

/* One routable method. */
struct rpc_route {
    char *path; /* "/pkg.Service/Method" */
    size_t path_len;
    const char *service; /* "pkg.Service" (descriptor-owned) */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    const rpc_method_impl_t *impl; /* NULL: declared by the descriptor only */
    const char *const *allowed;    /* NULL: any authenticated peer */
    const char *note;              /* UNIMPLEMENTED detail */
    bool handles_bad_input;        /* rpc_service_def_t.handles_bad_input */
    void *registered;              /* implemented unary methods: the core's handle */
    /* The route's metric series, found once and kept (call_metrics in rpc_server.c). */
    _Atomic(struct cx_metric *) m_calls[CX_CODE_COUNT_];
    _Atomic(struct cx_metric *) m_duration;
};

enum rpc_tag_kind {
    TAG_NEW_CALL,
    TAG_UNARY_RECV,
    TAG_FINISHED,      /* final batch of a unary or rejected call: free afterwards */
    TAG_STREAM_MD,     /* initial metadata of a stream sent */
    TAG_STREAM_RECV,   /* a stream message (or half-close) received */
    TAG_STREAM_SEND,   /* a stream message sent */
    TAG_STREAM_STATUS, /* a stream's status sent */
    TAG_STREAM_CLOSE,  /* RECV_CLOSE_ON_SERVER: the call is over */
    TAG_SHUTDOWN,
};

struct rpc_tag {
    enum rpc_tag_kind kind;
    struct rpc_call *call;
};

struct rpc_sendq {
    grpc_byte_buffer *buf;
    struct rpc_sendq *next;
};

struct rpc_call {
    rpc_server_t *srv;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array req_md;
    const struct rpc_route *route;
    const struct rpc_route *reg_route; /* requested as a registered (unary) call */
    gpr_timespec reg_deadline;
    rpc_arena_t *arena;
    rpc_arena_t *msg_arena; /* set only while a stream's on_message runs */
    char peer[RPC_PEER_NAME_MAX];
    char corr[RPC_CORRELATION_ID_MAX + 1];
    char trace_id[RPC_TRACE_ID_LEN + 1]; /* the caller's trace, or a new one */
    char span_id[RPC_SPAN_ID_LEN + 1];   /* this call's span: the parent of downstream calls */
    char trace_flags[3];
    char method[160];
    int64_t deadline_ms; /* monotonic clock, ms */
    int64_t start_ms;    /* monotonic clock, ms: arrival */
    uint64_t start_us;   /* the same in us, for the latency histogram */
    grpc_byte_buffer *recv_buf;
    cx_log_field_t log_fields[RPC_ACCESS_LOG_FIELDS]; /* rpc_call_log_field */
    size_t nlog_fields;
    bool input_bad;       /* the request did not decode or failed the input check */
    cx_error_t input_err; /* why, when input_bad */
    int client_cancelled;
    int counted; /* included in srv->active_calls */

    /* Storage for what we send; must live until the batch completes. */
    grpc_metadata init_md[1];
    int init_md_set; /* init_md[0].value holds a slice reference */
    grpc_metadata trail_md[1];

    struct rpc_tag t_new, t_recv, t_done, t_md, t_send, t_status, t_close;

    /* Streams only; guarded by mu. */
    pthread_mutex_t mu;
    struct rpc_sendq *q_head, *q_tail;
    int sending;
    int finish_requested;
    int status_sent;
    int over;          /* closed or cancelled: no more sends */
    int done_called;   /* on_done claimed by one thread */
    int done_finished; /* on_done returned */
    int pending;       /* batches in flight (and the starting thread's hold) */
    int reading;       /* RECV_MESSAGE batches armed whose handling has not returned */
    cx_error_t finish_status;
    void *user;
    struct rpc_call *stream_next, *stream_prev; /* srv->streams list */
};

struct rpc_health;
struct rpc_reflection;

struct rpc_server {
    rpc_server_options_t opts;
    char *listen_addr;
    char *trust_domain;
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *threads;           /* max_threads slots */
    unsigned max_threads;         /* opts.max_threads, at least opts.threads */
    unsigned nthreads_started;    /* written under mu; grows, never shrinks */
    _Atomic unsigned nthreads;    /* nthreads_started, for the lock-free test in handler_enter */
    _Atomic unsigned in_handlers; /* workers inside a unary handler */
    int port;
    int started;

    struct rpc_route *routes; /* sorted by path */
    size_t nroutes, cap_routes;
    const char **service_names; /* registration order, unique */
    size_t nservices;

    struct rpc_health *health;
    struct rpc_reflection *reflection;
    void *context; /* rpc_server_set_context */

    pthread_mutex_t mu; /* shutdown state and stream list */
    pthread_cond_t cv;
    int shutting_down;
    int shutdown_done;
    unsigned active_calls; /* arrived and not yet freed; the queue outlives them all */
    int stopped;
    struct rpc_call *streams;
    struct rpc_tag t_shutdown;
};

/* rpc_identity.c */
/* Parse "spiffe://<td>/<name>" into name; name must be 1..63 chars of [a-z0-9-]. */
bool rpc_identity_from_uri(const char *uri, size_t len, const char *trust_domain, char *name,
                           size_t namesz);
/* Count the URI SANs of a PEM certificate; when exactly one, parse it as an identity. Returns
 * true only for exactly one valid credex identity. */
bool rpc_identity_from_pem(const char *pem, const char *trust_domain, char *name, size_t namesz);
/* Read a whole (small) file into a NUL-terminated malloc'd string. */
char *rpc_read_file(const char *path, cx_error_t *err);
/* Monotonic clock in ms. */
int64_t rpc_now_ms(void);
gpr_timespec rpc_deadline_from_ms(int64_t monotonic_ms);

/* Channel arguments shared by clients and servers, tuned for loopback latency (see
 * docs/PERFORMANCE.md): no BDP probing pings, no retry buffering, latency optimisation, no
 * channelz; and fast reconnection, so that a peer that restarted is used again within 1 s.
 * Returns a static, immutable set. */
const grpc_channel_args *rpc_channel_args(void);
#define RPC_CHANNEL_ARGS_MAX 8 /* an upper bound of rpc_channel_args()->num_args */

/* grpc_init, with the core's log lines routed into cx_log first. Pair with grpc_shutdown. */
void rpc_core_init(void);

/* rpc_trace.c */
/* A random id of bufsz - 1 lower-case hex digits, never all zeros. */
void rpc_trace_id_new(char *buf, size_t bufsz);
/* "00-<trace_id>-<span_id>-<flags>" into out (>= RPC_TRACEPARENT_LEN + 1 bytes). */
void rpc_traceparent_format(char *out, const char *trace_id, const char *span_id,
                            const char *flags);

/* rpc_health.c */
struct rpc_health *rpc_health_new(void);
void rpc_health_free(struct rpc_health *h);
bool rpc_health_register(rpc_server_t *srv, cx_error_t *err);
void rpc_health_set(struct rpc_health *h, const char *service, bool serving);
/* Before start: the service's status is its own (rpc_health_start leaves it as set). */
void rpc_health_pin(struct rpc_health *h, const char *service);
/* At start: every service not pinned becomes SERVING. */
void rpc_health_start(struct rpc_health *h);
void rpc_health_set_probe(struct rpc_health *h, const char *service, rpc_health_probe_fn fn,
                          void *ctx);
/* rpc_server_ready's answer (rpc.h). */
bool rpc_health_ready(struct rpc_health *h, char *reason, size_t reasonsz);
/* Shutdown: everything NOT_SERVING, watchers told and finished. */
void rpc_health_shutdown(struct rpc_health *h);

/* rpc_reflection.c */
struct rpc_reflection *rpc_reflection_new(const unsigned char *fds, size_t len, cx_error_t *err);
void rpc_reflection_free(struct rpc_reflection *r);
bool rpc_reflection_register(rpc_server_t *srv, cx_error_t *err);

/* rpc_server.c: a serialized message as a byte buffer (NULL on pack failure), in a buffer of
 * ours that is wiped when gRPC releases it. */
grpc_byte_buffer *rpc_pack(const ProtobufCMessage *msg);
/* A copy of data[0..len) in a slice that is wiped when gRPC releases it (header values). */
grpc_slice rpc_owned_slice(const void *data, size_t len);
/* Bytes wiped so far by the release of rpc_pack and rpc_owned_slice buffers (for tests). */
size_t rpc_owned_wiped_bytes(void);
/* Unpack a byte buffer into the arena; NULL when it does not decode. The wire bytes are read
 * in place (one slice) or copied into the arena (several), never into unwiped memory. */
/* Unpack buf into arena. check (may be NULL) sees the contiguous wire bytes first. NULL with
 * err set (INVALID_ARGUMENT) when the bytes fail the check or do not decode as desc. */
ProtobufCMessage *
rpc_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *buf, rpc_arena_t *arena,
           bool (*check)(const ProtobufCMessageDescriptor *, const uint8_t *, size_t, cx_error_t *),
           cx_error_t *err);

#endif
