/*
 * rpc: credex's gRPC runtime over the gRPC C core. This module is the only one that includes
 * <grpc/...> (docs/DESIGN.md); everything else sees protobuf-c messages, cx_error_t and these
 * types.
 *
 * Server model. One completion queue served by worker threads: `threads` at start, and one
 * more whenever a unary handler starts while no other worker is left to poll the queue, up to
 * `max_threads` (handlers block; were every worker blocked in one, arrivals and the answers of
 * the calls they wait on would queue unread while the CPUs idle). Services are
 * registered from their protobuf-c service descriptors; every method of a registered service
 * is routable, and a method without an implementation answers UNIMPLEMENTED at once with the
 * service's note (unless the server's gate closed it first). Unknown paths answer
 * UNIMPLEMENTED at once too.
 *  - Unary handlers run synchronously on a worker thread and may block (downstream calls,
 *    database); request and reply live in the call's arena, freed when the call ends.
 *  - Streaming handlers (server-streaming and bidi) are event-driven and must not block: they
 *    get each received message, may queue replies with rpc_call_send from any thread, and end
 *    the call with rpc_call_finish. Each received message lives in a per-message arena.
 * Every call is on mutually-authenticated TLS: the peer's certificate must chain to the
 * configured CA and carry exactly one URI SAN of the form spiffe://<trust-domain>/<name>;
 * <name> is the peer identity a method's allow-list is checked against.
 *
 * Limits: max message size (RESOURCE_EXHAUSTED), max metadata size, and a cap on deadlines
 * (a call's effective deadline is min(client deadline, now + cap)).
 *
 * Correlation: the `x-correlation-id` request header (1..64 chars of [A-Za-z0-9._-]) is taken,
 * or a fresh one created; it is echoed in the response headers, handed to handlers, and sent on
 * every downstream call made with that call as parent.
 *
 * Tracing: the W3C `traceparent` request header is accepted when it is valid (version 00,
 * strict), else a new trace starts; every call is a span of its own, its trace id is written in
 * every log line its handling thread emits (cx_log_set_trace), and downstream calls made with it
 * as parent carry the same trace id with this call's span id as their parent (rpc_trace.c).
 *
 * Errors travel as a gRPC status (cx_code_grpc_status) plus the `credex-reason` trailer (the
 * stable reason code), so that a client recovers the exact cx_code_t.
 */
#ifndef CREDEX_COMMON_RPC_RPC_H
#define CREDEX_COMMON_RPC_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/error/cx_error.h"
#include "common/log/cx_log.h"

#define RPC_CORRELATION_HEADER "x-correlation-id"
#define RPC_REASON_TRAILER     "credex-reason"
#define RPC_CORRELATION_ID_MAX 64
#define RPC_PEER_NAME_MAX      64
#define RPC_TRACEPARENT_HEADER "traceparent"
#define RPC_TRACEPARENT_LEN    55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define RPC_TRACE_ID_LEN       32
#define RPC_SPAN_ID_LEN        16
#define RPC_ACCESS_LOG_FIELDS  6 /* fields a handler may add to its call's access-log line */

typedef struct rpc_server rpc_server_t;
typedef struct rpc_call rpc_call_t;
typedef struct rpc_client rpc_client_t;
typedef struct rpc_arena rpc_arena_t;

/* ---- arenas --------------------------------------------------------------------------- */

/* A bump allocator: many allocations, one free, which wipes the memory (it may have held
 * credential material). Not thread-safe. */
rpc_arena_t *rpc_arena_new(size_t first_chunk);
void rpc_arena_free(rpc_arena_t *arena); /* NULL-safe */
/* Zeroed, 16-byte aligned memory; aborts on out-of-memory (as the gRPC core itself does). */
void *rpc_arena_alloc(rpc_arena_t *arena, size_t size);
char *rpc_arena_strndup(rpc_arena_t *arena, const char *s, size_t n);
/* Bytes handed out so far (rounded up to the alignment): what the free will wipe. */
size_t rpc_arena_used(const rpc_arena_t *arena);
/* A protobuf-c allocator that allocates from the arena (free is a no-op). */
ProtobufCAllocator rpc_arena_allocator(rpc_arena_t *arena);

/* ---- TLS material ---------------------------------------------------------------------- */

typedef struct rpc_tls {
    const char *ca_file;      /* PEM: the CA every peer must chain to */
    const char *cert_file;    /* PEM: our certificate (chain) */
    const char *key_file;     /* PEM: our private key */
    const char *trust_domain; /* "credex.local" when NULL */
} rpc_tls_t;

/* ---- server ---------------------------------------------------------------------------- */

typedef bool (*rpc_unary_fn)(rpc_call_t *call, const ProtobufCMessage *request,
                             ProtobufCMessage **reply, cx_error_t *err);

typedef struct rpc_stream_ops {
    /* A request message arrived (exactly once for server-streaming). Return false to end the
     * call with *err. */
    bool (*on_message)(rpc_call_t *call, const ProtobufCMessage *request, cx_error_t *err);
    /* The client half-closed (bidi only). NULL means: finish with OK once sends drain. */
    void (*on_half_close)(rpc_call_t *call);
    /* The call is over (finished, cancelled or server shutdown). Runs once, after the last
     * on_message/on_half_close has returned; after this returns the call must not be used.
     * May be NULL. */
    void (*on_done)(rpc_call_t *call);
} rpc_stream_ops_t;

typedef enum rpc_kind { RPC_UNARY = 0, RPC_SERVER_STREAM, RPC_BIDI_STREAM } rpc_kind_t;

typedef struct rpc_method_impl {
    const char *method; /* name as in the .proto, e.g. "GenerateDataKey" */
    rpc_kind_t kind;
    rpc_unary_fn unary;             /* RPC_UNARY */
    const rpc_stream_ops_t *stream; /* streaming kinds */
    /* NULL-terminated peer names allowed to call, e.g. {"gateway", "oauth", NULL}; NULL means
     * the service's list (rpc_service_def_t). */
    const char *const *allowed_peers;
} rpc_method_impl_t;

typedef struct rpc_server_options {
    const char *name;        /* our service name, for logs, e.g. "keywrap" */
    const char *listen_addr; /* "127.0.0.1:7101"; port 0 picks a free port */
    rpc_tls_t tls;
    unsigned threads;     /* worker threads at start, >= 1 */
    unsigned max_threads; /* the most the pool grows to; below `threads` means `threads` */
    size_t max_message_bytes;
    size_t max_metadata_bytes;
    unsigned max_deadline_ms;
    unsigned shutdown_grace_ms; /* drain time before in-flight calls are cancelled */
    /* A serialized google.protobuf.FileDescriptorSet for server reflection (NULL: no
     * reflection). Must outlive the server. */
    const unsigned char *descriptor_set;
    size_t descriptor_set_len;
    /* A gate run for every routed call, implemented or not, after peer authentication and
     * the allow-list and before the handler (e.g. a feature toggle that closes a whole API).
     * Returning false answers the call with *err. Called on worker threads, concurrently:
     * must not block and must be thread-safe. NULL: every call passes. gate_ctx must outlive
     * the server. */
    bool (*gate)(void *gate_ctx, const char *method_path, cx_error_t *err);
    void *gate_ctx;
    /* A check of the wire bytes of every request before protobuf-c unpacks them (what only
     * the bytes show: e.g. a NUL inside a string, which unpacking silently truncates). false
     * makes the request invalid like one that does not decode. Thread-safe, non-blocking.
     * NULL: no check. */
    bool (*input_check)(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                        cx_error_t *err);
} rpc_server_options_t;

/* Create a server (not yet listening). Health (grpc.health.v1.Health) is always registered;
 * reflection (grpc.reflection.v1.ServerReflection, and the same under its older name
 * grpc.reflection.v1alpha.ServerReflection) when a descriptor set is given. */
rpc_server_t *rpc_server_new(const rpc_server_options_t *opts, cx_error_t *err);

/* A service to register. impls may cover only some methods; the others answer UNIMPLEMENTED
 * with `unimplemented_note` (e.g. "planned: issue 4"). The allow-list applies to every method
 * that has no list of its own, implemented or not, so a service's exposure is fixed from day
 * one. Everything pointed to must outlive the server. */
typedef struct rpc_service_def {
    const ProtobufCServiceDescriptor *desc;
    /* Serve desc under this full service name instead of desc->name: an alias whose messages
     * are identical on the wire (e.g. an older package of the same protocol). NULL: desc->name. */
    const char *name;
    const rpc_method_impl_t *impls;
    size_t nimpls;
    const char *const *allowed_peers; /* NULL-terminated; NULL means any authenticated peer */
    const char *unimplemented_note;
    /* Unary methods: a request that does not decode, or fails the server's input_check, still
     * reaches the handler, with request NULL and rpc_call_input_error() saying why, so that a
     * service that audits every failed call can audit it too. false: such a request is refused
     * with INVALID_ARGUMENT before any handler runs. */
    bool handles_bad_input;
} rpc_service_def_t;

/* Register a service before rpc_server_start. */
bool rpc_server_add_service(rpc_server_t *srv, const rpc_service_def_t *def, cx_error_t *err);

/* Bind and start the worker threads. Fails (UNAVAILABLE) when the address cannot be bound or
 * the TLS files cannot be read. Health then reports SERVING for every registered service whose
 * status was not set beforehand (rpc_server_set_serving). */
bool rpc_server_start(rpc_server_t *srv, cx_error_t *err);

/* Attach the service's state, handed to handlers by rpc_call_context. Set before start. */
void rpc_server_set_context(rpc_server_t *srv, void *context);

/* The bound port (useful with port 0). */
int rpc_server_port(const rpc_server_t *srv);

/* Health status of one service ("" is the whole server). Thread-safe; Watch streams see it.
 * Set before rpc_server_start, the status is kept at start (a service that must not serve, e.g.
 * a dev key provider in production mode, is never SERVING, not even for an instant); otherwise
 * start marks every service SERVING. */
void rpc_server_set_serving(rpc_server_t *srv, const char *service, bool serving);

/* Health computed on demand: a Check of `service` runs fn(ctx) (at most every 500 ms; in
 * between the last answer stands) on the worker thread, and its answer becomes the service's
 * status, which Watch streams see too. fn may block for a bounded time (e.g. a database ping
 * with its timeout). Set before start. */
typedef bool (*rpc_health_probe_fn)(void *ctx);
void rpc_server_set_health_probe(rpc_server_t *srv, const char *service, rpc_health_probe_fn fn,
                                 void *ctx);

/* Readiness, as the health service judges it: true when every registered service (and "", the
 * whole server) is SERVING, the probes of rpc_server_set_health_probe run first when due (so a
 * call may block for a probe's bounded time). Otherwise false with "<service>: not serving"
 * (or "server: ...", "shutting down: ...") in reason. Thread-safe; for the operations
 * listener's /readyz (common/svc). */
bool rpc_server_ready(rpc_server_t *srv, char *reason, size_t reasonsz);

/* Block until SIGTERM or SIGINT (the caller must have blocked them with rpc_block_signals
 * before starting any thread), then shut down gracefully. Returns the signal number. */
int rpc_server_wait_for_signal(rpc_server_t *srv);

/* Block SIGTERM/SIGINT/SIGPIPE in the calling thread; threads created afterwards inherit it.
 * Call first thing in main. */
void rpc_block_signals(void);

/* Graceful shutdown: stop accepting, mark NOT_SERVING, end streams, let in-flight unary calls
 * finish for up to shutdown_grace_ms, then cancel the rest and join the workers. Idempotent;
 * thread-safe. */
void rpc_server_shutdown(rpc_server_t *srv);

/* Shut down if needed, then free. NULL-safe. */
void rpc_server_free(rpc_server_t *srv);

/* ---- the call, as seen by a handler --------------------------------------------------- */

/* Why the request could not be used (a service with handles_bad_input gets request NULL);
 * NULL when the request decoded and passed the input check. Never quotes the input. */
const cx_error_t *rpc_call_input_error(const rpc_call_t *call);
/* Peer identity name (the part after spiffe://<trust-domain>/), e.g. "gateway". */
const char *rpc_call_peer(const rpc_call_t *call);
const char *rpc_call_correlation_id(const rpc_call_t *call);
/* The call's W3C trace id (32 lower-case hex digits): the caller's, or a new one. */
const char *rpc_call_trace_id(const rpc_call_t *call);
/* Full method path, e.g. "/credex.v1.KeyWrap/Unwrap". */
const char *rpc_call_method(const rpc_call_t *call);
/* A request header's value (first occurrence), NUL-terminated in the call arena; NULL if absent
 * or if it is a binary header. Keys are lower-case. */
const char *rpc_call_header(rpc_call_t *call, const char *key);
/* rpc_call_header of n keys (n <= RPC_CALL_HEADERS_MAX) in one pass over the request's
 * headers: values[i] for keys[i]. */
#define RPC_CALL_HEADERS_MAX 32
void rpc_call_headers(rpc_call_t *call, const char *const *keys, size_t n, const char **values);
/* Milliseconds until the effective deadline (0 when passed). */
int64_t rpc_call_remaining_ms(const rpc_call_t *call);
/* Call-scoped memory (unary: lives until the reply is sent; streams: until the call ends, except
 * that rpc_call_alloc inside on_message returns memory that lasts until on_message returns). */
rpc_arena_t *rpc_call_arena(rpc_call_t *call);
void *rpc_call_alloc(rpc_call_t *call, size_t size);
/* The server the call arrived on. */
rpc_server_t *rpc_call_server(rpc_call_t *call);
/* The application state given to rpc_server_set_context (one per process: the service's own
 * state, so handlers need no file-level globals). */
void *rpc_call_context(const rpc_call_t *call);
/* Add a field to the call's access-log line (`rpc.done`, written when a unary call ends), so
 * that what a handler knows about the call (the resource it acted on) goes into the one line
 * every call gets instead of a second line of its own. Build the field with CX_LOG_STR,
 * CX_LOG_INT or CX_LOG_BOOL (the key a literal); a string value is copied into the call arena.
 * The logger's rules apply (credential-shaped values are redacted). At most
 * RPC_ACCESS_LOG_FIELDS fields; later ones are dropped. Unary handlers, on their own thread. */
void rpc_call_log_field(rpc_call_t *call, cx_log_field_t field);
/* Opaque per-call slot for streaming handlers. */
void rpc_call_set_user(rpc_call_t *call, void *user);
void *rpc_call_user(const rpc_call_t *call);

/* Streaming only; thread-safe. Serialises msg immediately (msg may be freed on return) and
 * queues it. Returns false when the call is already over. */
bool rpc_call_send(rpc_call_t *call, const ProtobufCMessage *msg);
/* Streaming only; thread-safe. Ends the call once queued messages are sent; status NULL or
 * CX_OK means OK. Later calls are ignored. */
void rpc_call_finish(rpc_call_t *call, const cx_error_t *status);

/* ---- client ---------------------------------------------------------------------------- */

/* A channel to one target. `expected_peer` is the name the server's certificate must carry
 * (spiffe://<trust-domain>/<expected_peer>); the TLS handshake fails otherwise. The server
 * certificate must also be valid for the target's host (DNS or IP SAN). Thread-safe; share
 * one client per target. */
rpc_client_t *rpc_client_new(const char *target, const char *expected_peer, const rpc_tls_t *tls,
                             cx_error_t *err);
void rpc_client_free(rpc_client_t *client); /* NULL-safe */

typedef struct rpc_header {
    const char *key; /* lower-case */
    const char *value;
} rpc_header_t;

typedef struct rpc_call_options {
    /* Deadline; 0 means the parent's remaining time, or the client's default (5 s). */
    unsigned deadline_ms;
    /* Propagates correlation id and deadline (min of both). May be NULL. */
    const rpc_call_t *parent;
    /* Used when there is no parent; NULL creates a fresh id. */
    const char *correlation_id;
    /* Used when there is no parent: the traceparent header to send as it is (the caller's span,
     * e.g. from rpc_trace_child); NULL or invalid: a new trace. */
    const char *traceparent;
    const rpc_header_t *headers; /* extra request headers */
    size_t nheaders;
} rpc_call_options_t;

/* Blocking unary call. The reply is unpacked into `arena` (owned by the caller). On failure
 * err carries the server's cx code (from credex-reason) or one derived from the gRPC status;
 * a deadline expiry is CX_ERR_DEADLINE_EXCEEDED and an unreachable peer CX_ERR_UNAVAILABLE.
 * `method` is the method name within `service`. */
bool rpc_client_unary(rpc_client_t *client, const ProtobufCServiceDescriptor *service,
                      const char *method, const ProtobufCMessage *request,
                      const rpc_call_options_t *opts, rpc_arena_t *arena, ProtobufCMessage **reply,
                      cx_error_t *err);

/* W3C trace context. Parse a traceparent strictly (version 00, lower-case hex, exact lengths,
 * neither id zero): trace_id (>= 33 bytes) and flags (>= 3 bytes) filled, or false. */
bool rpc_traceparent_parse(const char *s, size_t len, char *trace_id, char *flags);
/* A span of the caller's own under an incoming traceparent (NULL or invalid: a new trace):
 * traceparent (>= RPC_TRACEPARENT_LEN + 1 bytes) to send downstream, trace_id (>= 33 bytes) to
 * log. For a process that receives requests outside gRPC (the edge's HTTP). Thread-safe. */
void rpc_trace_child(const char *incoming, char *traceparent, char *trace_id);

/* Fresh random correlation id (32 hex chars) into buf (>= 33 bytes). */
void rpc_correlation_id_new(char *buf, size_t bufsz);
/* True when s is acceptable as a correlation id. */
bool rpc_correlation_id_valid(const char *s, size_t len);

#endif
