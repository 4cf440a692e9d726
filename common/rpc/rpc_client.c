/*
 * rpc_client: blocking unary calls over one mutually-authenticated channel per target.
 * The server must present a certificate chaining to our CA, valid for the target host, with
 * exactly one URI SAN naming the expected peer: checked in the TLS handshake, so a wrong peer
 * never sees a request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/metrics/cx_metrics.h"
#include "common/rpc/rpc_internal.h"

#define CLIENT_MAX_HEADERS         16
#define CLIENT_DEFAULT_DEADLINE_MS 5000

struct verify_ctx {
    char expected[RPC_PEER_NAME_MAX];
    char trust_domain[128];
};

struct rpc_client {
    grpc_channel *channel;
    char target[256];
};

static int verify_peer(const char *target_name, const char *peer_pem, void *userdata)
{
    (void)target_name;
    const struct verify_ctx *v = userdata;
    char name[RPC_PEER_NAME_MAX];
    if (!rpc_identity_from_pem(peer_pem, v->trust_domain, name, sizeof(name)))
        return 1;
    return strcmp(name, v->expected) != 0;
}

static void verify_destruct(void *userdata)
{
    free(userdata);
}

rpc_client_t *rpc_client_new(const char *target, const char *expected_peer, const rpc_tls_t *tls,
                             cx_error_t *err)
{
    rpc_client_t *c = NULL;
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    const char *td = tls->trust_domain ? tls->trust_domain : "credex.local";
    if (strlen(target) >= sizeof(c->target) || strlen(expected_peer) >= RPC_PEER_NAME_MAX ||
        strlen(td) >= sizeof(((struct verify_ctx *)0)->trust_domain)) {
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "client target or peer name too long");
        return NULL;
    }
    if ((ca = rpc_read_file(tls->ca_file, err)) == NULL ||
        (cert = rpc_read_file(tls->cert_file, err)) == NULL ||
        (key = rpc_read_file(tls->key_file, err)) == NULL)
        goto out;
    rpc_core_init();
    struct verify_ctx *v = calloc(1, sizeof(*v));
    if (v == NULL)
        abort();
    strcpy(v->expected, expected_peer);
    strcpy(v->trust_domain, td);
    verify_peer_options vo = {.verify_peer_callback = verify_peer,
                              .verify_peer_callback_userdata = v,
                              .verify_peer_destruct = verify_destruct};
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_credentials_create(ca, &pair, &vo, NULL);
    if (creds == NULL) {
        free(v);
        grpc_shutdown();
        cx_error_set(err, CX_ERR_INVALID_ARGUMENT, "TLS client credentials rejected");
        goto out;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    strcpy(c->target, target);
    c->channel = grpc_channel_create(target, creds, rpc_channel_args());
out:
    if (creds != NULL)
        grpc_channel_credentials_release(creds);
    free(ca);
    free(cert);
    if (key != NULL) {
        explicit_bzero(key, strlen(key)); /* private key material (memset may be elided) */
        free(key);
    }
    return c;
}

void rpc_client_free(rpc_client_t *client)
{
    if (client == NULL)
        return;
    grpc_channel_destroy(client->channel);
    free(client);
    grpc_shutdown();
}

/* One pluck queue per calling thread, reused across calls: creating and destroying a queue per
 * call costs more than the call itself on loopback. Destroyed when the thread exits. */
static pthread_key_t cq_key;
static pthread_once_t cq_once = PTHREAD_ONCE_INIT;

static void cq_destroy(void *p)
{
    grpc_completion_queue_shutdown(p);
    grpc_completion_queue_destroy(p);
}

static void cq_key_init(void)
{
    pthread_key_create(&cq_key, cq_destroy);
}

static grpc_completion_queue *thread_cq(void)
{
    pthread_once(&cq_once, cq_key_init);
    grpc_completion_queue *cq = pthread_getspecific(cq_key);
    if (cq == NULL) {
        cq = grpc_completion_queue_create_for_pluck(NULL);
        pthread_setspecific(cq_key, cq);
    }
    return cq;
}

static const ProtobufCMethodDescriptor *method_find(const ProtobufCServiceDescriptor *svc,
                                                    const char *method)
{
    for (unsigned i = 0; i < svc->n_methods; i++)
        if (strcmp(svc->methods[i].name, method) == 0)
            return &svc->methods[i];
    return NULL;
}

static const grpc_slice *md_find(const grpc_metadata_array *a, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < a->count; i++)
        if (GRPC_SLICE_LENGTH(a->metadata[i].key) == klen &&
            memcmp(GRPC_SLICE_START_PTR(a->metadata[i].key), key, klen) == 0)
            return &a->metadata[i].value;
    return NULL;
}

bool rpc_client_unary(rpc_client_t *client, const ProtobufCServiceDescriptor *service,
                      const char *method, const ProtobufCMessage *request,
                      const rpc_call_options_t *opts, rpc_arena_t *arena, ProtobufCMessage **reply,
                      cx_error_t *err)
{
    static const rpc_call_options_t no_opts;
    if (opts == NULL)
        opts = &no_opts;
    const ProtobufCMethodDescriptor *md = method_find(service, method);
    if (md == NULL || request->descriptor != md->input)
        return cx_error_set(err, CX_ERR_INTERNAL, "client: bad method or request type");
    if (opts->nheaders > CLIENT_MAX_HEADERS)
        return cx_error_set(err, CX_ERR_INTERNAL, "client: too many headers");
    uint64_t t0 = cx_metrics_now_us();

    /* Built without the printf family: this runs for every downstream call. */
    char path[256];
    size_t slen = strlen(service->name), mlen = strlen(method);
    if (slen + mlen + 3 > sizeof(path))
        return cx_error_set(err, CX_ERR_INTERNAL, "client: method path too long");
    path[0] = '/';
    memcpy(path + 1, service->name, slen);
    path[1 + slen] = '/';
    memcpy(path + 2 + slen, method, mlen + 1);
    char corr[RPC_CORRELATION_ID_MAX + 1];
    const char *cid = opts->parent ? rpc_call_correlation_id(opts->parent) : opts->correlation_id;
    size_t clen = cid != NULL ? strlen(cid) : 0;
    if (cid != NULL && rpc_correlation_id_valid(cid, clen))
        memcpy(corr, cid, clen + 1); /* valid: at most RPC_CORRELATION_ID_MAX */
    else
        rpc_correlation_id_new(corr, sizeof(corr));

    /* The parent call's trace with its span as our parent; else the caller's own span. */
    char tp[RPC_TRACEPARENT_LEN + 1], tid[RPC_TRACE_ID_LEN + 1], tflags[3];
    if (opts->parent != NULL)
        rpc_traceparent_format(tp, opts->parent->trace_id, opts->parent->span_id,
                               opts->parent->trace_flags);
    else if (opts->traceparent != NULL &&
             rpc_traceparent_parse(opts->traceparent, strlen(opts->traceparent), tid, tflags))
        memcpy(tp, opts->traceparent, sizeof(tp));
    else
        rpc_trace_child(NULL, tp, tid);

    int64_t ms = opts->deadline_ms ? opts->deadline_ms : CLIENT_DEFAULT_DEADLINE_MS;
    if (opts->parent != NULL) {
        int64_t left = rpc_call_remaining_ms(opts->parent);
        if (opts->deadline_ms == 0 || left < ms)
            ms = left;
    }
    if (ms <= 0)
        return cx_error_set(err, CX_ERR_DEADLINE_EXCEEDED, "deadline passed before the call");

    grpc_byte_buffer *send = rpc_pack(request);
    if (send == NULL)
        return cx_error_set(err, CX_ERR_INTERNAL, "client: request does not pack");

    bool ok = false;
    grpc_completion_queue *cq = thread_cq();
    /* Copied, never "static" slices for anything on the stack: the core treats static slices
     * as immortal and its HPACK encoder may reuse them by address on a later call. */
    grpc_slice mslice = grpc_slice_from_copied_string(path);
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
    grpc_call *call = grpc_channel_create_call(client->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               mslice, NULL, deadline, NULL);
    grpc_metadata md_out[CLIENT_MAX_HEADERS + 2];
    size_t nmd = 0;
    md_out[nmd].key = grpc_slice_from_static_string(RPC_CORRELATION_HEADER);
    md_out[nmd].value = grpc_slice_from_copied_string(corr);
    nmd++;
    md_out[nmd].key = grpc_slice_from_static_string(RPC_TRACEPARENT_HEADER);
    md_out[nmd].value = grpc_slice_from_copied_string(tp);
    nmd++;
    for (size_t i = 0; i < opts->nheaders; i++, nmd++) {
        md_out[nmd].key = grpc_slice_from_copied_string(opts->headers[i].key);
        /* Header values may be bearer tokens: our wiped buffer, not a core copy. */
        md_out[nmd].value = rpc_owned_slice(opts->headers[i].value, strlen(opts->headers[i].value));
    }
    grpc_metadata_array init_in, trail_in;
    grpc_metadata_array_init(&init_in);
    grpc_metadata_array_init(&trail_in);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = nmd;
    ops[0].data.send_initial_metadata.metadata = md_out;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_in;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_in;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    if (grpc_call_start_batch(call, ops, 6, call, NULL) != GRPC_CALL_OK) {
        cx_error_set(err, CX_ERR_INTERNAL, "client: batch refused");
        goto out;
    }
    grpc_event ev = grpc_completion_queue_pluck(cq, call, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE) {
        cx_error_set(err, CX_ERR_INTERNAL, "client: completion queue failed");
        goto out;
    }
    if (status != GRPC_STATUS_OK) {
        const grpc_slice *reason = md_find(&trail_in, RPC_REASON_TRAILER);
        cx_code_t code = CX_ERR_INTERNAL;
        if (reason != NULL) {
            char r[64];
            size_t n = GRPC_SLICE_LENGTH(*reason) < sizeof(r) - 1 ? GRPC_SLICE_LENGTH(*reason)
                                                                  : sizeof(r) - 1;
            memcpy(r, GRPC_SLICE_START_PTR(*reason), n);
            r[n] = '\0';
            code = cx_code_from_reason(r);
        } else {
            code = cx_code_from_grpc_status((int)status);
        }
        int dl = (int)GRPC_SLICE_LENGTH(details);
        cx_error_set(err, code, "%.*s", dl > 200 ? 200 : dl,
                     (const char *)GRPC_SLICE_START_PTR(details));
        goto out;
    }
    if (recv == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "empty reply from %s", path);
        goto out;
    }
    ProtobufCMessage *m = rpc_unpack(md->output, recv, arena, NULL, NULL);
    if (m == NULL) {
        cx_error_set(err, CX_ERR_INTERNAL, "reply from %s does not decode", path);
        goto out;
    }
    *reply = m;
    ok = true;
out:
    if (recv != NULL)
        grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_in);
    grpc_metadata_array_destroy(&trail_in);
    grpc_call_unref(call);
    grpc_slice_unref(mslice);
    for (size_t i = 0; i < nmd; i++) {
        grpc_slice_unref(md_out[i].key);
        grpc_slice_unref(md_out[i].value);
    }
    cx_metrics_client_call(CX_METRICS_RPC, service->name, md->name,
                           ok ? "ok" : cx_code_reason(err->code), cx_metrics_now_us() - t0);
    return ok;
}
