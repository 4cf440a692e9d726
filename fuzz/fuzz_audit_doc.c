/*
 * Fuzz target: the decoder of stored audit events (store_audit_decode), outside input to the
 * store's audit queries (anyone who can write to the database controls the documents). The
 * input forms are fuzz_bson.h's: '!' edits of the document store_audit_encode writes for a
 * full event, '{' extended JSON, else raw BSON.
 *
 * Invariants (abort on violation): no crash or leak; a document is accepted iff its event_id
 * is a non-empty string; what is accepted round-trips: encoding the decoded event and decoding
 * that again gives the same message (same packed bytes) and the same document again.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz/fuzz_bson.h"
#include "services/store/store_internal.h"

/* 'B' event_id, 'C' created_at, 'D' event_type, ... in the edit lines. */
static const char *const fields[] = {"event_id",     "created_at",
                                     "event_type",   "outcome",
                                     "reason",       "resource_type",
                                     "resource_id",  "subject_user_id",
                                     "caller_kind",  "actor_id",
                                     "peer",         "correlation_id",
                                     "intended_use", "owner_type",
                                     "owner_id",     "resource_context",
                                     "attributes",   "_id"};
#define NFIELDS (sizeof(fields) / sizeof(fields[0]))

/* The document of an event with every field set (as audit.c writes it). */
static void base_doc(bson_t *out)
{
    Credex__V1__ResourceContext__AttributesEntry ra =
        CREDEX__V1__RESOURCE_CONTEXT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__ResourceContext__AttributesEntry *ras[] = {&ra};
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    Credex__V1__AuditEvent__AttributesEntry a1 = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT,
                                            a2 = CREDEX__V1__AUDIT_EVENT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__AuditEvent__AttributesEntry *as[] = {&a1, &a2};
    Credex__V1__Owner o = CREDEX__V1__OWNER__INIT;
    Credex__V1__AuditEvent e = CREDEX__V1__AUDIT_EVENT__INIT;
    ra.key = "tool";
    ra.value = "create_issue";
    rc.resource_type = "mcp_server";
    rc.resource_id = "github";
    rc.agent_id = "agent-7";
    rc.provider_resource_id = "repo:credex";
    rc.n_attributes = 1;
    rc.attributes = ras;
    a1.key = "version";
    a1.value = "2";
    a2.key = "grantee";
    a2.value = "user:bob";
    o.owner_type = CREDEX__V1__OWNER_TYPE__OWNER_TYPE_USER;
    o.owner_id = "alice";
    e.event_id = "evt_0123456789ABCDEFGHJKMNPQRS";
    e.created_at_ms = 1700000000123;
    e.event_type = "secret.retrieve";
    e.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    e.reason = "permission_denied";
    e.resource_type = "secret_ref";
    e.resource_id = "sec_5NPKMVKYTE6Z2RVKV37EW1BN4H";
    e.subject_user_id = "alice";
    e.caller_kind = CREDEX__V1__CALLER_KIND__CALLER_KIND_SERVICE_ON_BEHALF_OF_USER;
    e.actor_id = "agent-runtime";
    e.peer = "gateway";
    e.correlation_id = "req-1";
    e.intended_use = "mcp_server_env";
    e.resource_context = &rc;
    e.owner = &o;
    e.n_attributes = 2;
    e.attributes = as;
    store_audit_encode(&e, out);
}

static uint8_t *packed(const Credex__V1__AuditEvent *e, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(&e->base);
    uint8_t *p = malloc(*n + 1);
    if (p == NULL || protobuf_c_message_pack(&e->base, p) != *n)
        abort();
    return p;
}

static void check(const bson_t *doc)
{
    rpc_arena_t *arena = rpc_arena_new(1024);
    Credex__V1__AuditEvent e1, e2;
    bson_iter_t it;
    uint32_t idlen = 0;
    const char *id = bson_iter_init_find(&it, doc, "event_id") && BSON_ITER_HOLDS_UTF8(&it)
                         ? bson_iter_utf8(&it, &idlen)
                         : NULL;
    bool ok = store_audit_decode(doc, arena, &e1);
    if (ok != (id != NULL && idlen > 0 && id[0] != '\0'))
        abort();
    if (ok) {
        bson_t d2, d3;
        size_t n1, n2;
        store_audit_encode(&e1, &d2);
        if (!store_audit_decode(&d2, arena, &e2))
            abort();
        store_audit_encode(&e2, &d3);
        uint8_t *p1 = packed(&e1, &n1), *p2 = packed(&e2, &n2);
        if (n1 != n2 || memcmp(p1, p2, n1) != 0 || !bson_equal(&d2, &d3))
            abort();
        free(p1);
        free(p2);
        bson_destroy(&d2);
        bson_destroy(&d3);
    }
    rpc_arena_free(arena);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const fuzz_bson_target_t target = {base_doc, fields, NFIELDS, check};
    fuzz_bson_run(&target, data, size);
    return 0;
}
