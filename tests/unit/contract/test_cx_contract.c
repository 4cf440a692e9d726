/* common/contract: the rules of every request field, the message walker and the wire check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/contract/cx_contract.h"
#include "credex/v1/gateway.pb-c.h"
#include "credex/v1/keywrap.pb-c.h"
#include "credex/v1/oauth.pb-c.h"
#include "credex/v1/store.pb-c.h"

/* ---- every request field has a rule ---------------------------------------------------------- */

static const ProtobufCServiceDescriptor *const services[] = {
    &credex__v1__secrets__descriptor,
    &credex__v1__retrieval__descriptor,
    &credex__v1__audit__descriptor,
    &credex__v1__admin__descriptor,
    &credex__v1__credential_store__descriptor,
    &credex__v1__key_wrap__descriptor,
    &credex__v1__connectors__descriptor,
    &credex__v1__connections__descriptor,
    &credex__v1__provider_tokens__descriptor,
};

static unsigned unruled;

static void walk_ruled(const ProtobufCMessageDescriptor *d, const char *map, unsigned depth)
{
    if (depth > 8)
        return;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const cx_contract_rule_t *r = cx_contract_field_rule(d, f, map);
        bool text = f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES;
        bool rep = f->label == PROTOBUF_C_LABEL_REPEATED;
        if ((text && !r) || (rep && (!r || !r->max_items))) {
            printf("no rule: %s.%s\n", d->name, f->name);
            unruled++;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            walk_ruled(sd, cx_contract_is_map_entry(sd) ? f->name : NULL, depth + 1);
        }
    }
}

static void every_request_field_has_a_rule(void **state)
{
    (void)state;
    unruled = 0;
    for (size_t s = 0; s < sizeof(services) / sizeof(services[0]); s++)
        for (unsigned m = 0; m < services[s]->n_methods; m++)
            walk_ruled(services[s]->methods[m].input, NULL, 0);
    assert_int_equal(unruled, 0);
}

/* ---- values ---------------------------------------------------------------------------------- */

static bool ok_value(const char *field, const char *v)
{
    cx_error_t e;
    return cx_contract_check_value(field, v, true, &e);
}

static void utf8_decoder(void **state)
{
    (void)state;
    size_t n = 0;
    assert_true(cx_contract_utf8((const uint8_t *)"h\xc3\xa9llo", 6, &n));
    assert_int_equal(n, 5);
    assert_true(cx_contract_utf8((const uint8_t *)"\xf0\x9f\x94\x91", 4, &n)); /* U+1F511 */
    assert_int_equal(n, 1);
    assert_false(cx_contract_utf8((const uint8_t *)"\xc0\xaf", 2, NULL));         /* overlong */
    assert_false(cx_contract_utf8((const uint8_t *)"\xe0\x80\xaf", 3, NULL));     /* overlong */
    assert_false(cx_contract_utf8((const uint8_t *)"\xed\xa0\x80", 3, NULL));     /* surrogate */
    assert_false(cx_contract_utf8((const uint8_t *)"\xf4\x90\x80\x80", 4, NULL)); /* > 10FFFF */
    assert_false(cx_contract_utf8((const uint8_t *)"\xc3", 1, NULL));             /* truncated */
    assert_false(cx_contract_utf8((const uint8_t *)"\x80", 1, NULL));             /* stray */
    assert_false(cx_contract_utf8((const uint8_t *)"\xff", 1, NULL));
}

static void text_counts_characters_not_bytes(void **state)
{
    (void)state;
    char name[128 * 2 + 1];
    /* 128 two-byte characters: 256 bytes, within the 128-character limit. */
    for (int i = 0; i < 128; i++)
        memcpy(name + 2 * i, "\xc3\xa9", 2);
    name[256] = '\0';
    assert_true(ok_value("display_name", name));
    char longer[129 * 2 + 1];
    for (int i = 0; i < 129; i++)
        memcpy(longer + 2 * i, "\xc3\xa9", 2);
    longer[258] = '\0';
    assert_false(ok_value("display_name", longer));
}

static void text_refuses_controls_and_spoofing(void **state)
{
    (void)state;
    assert_true(ok_value("display_name", "My OpenAI key"));
    assert_false(ok_value("display_name", "a\x1b[31mred")); /* ESC: terminal escapes */
    assert_false(ok_value("display_name", "line\nbreak"));
    assert_false(ok_value("display_name", "tab\there"));
    assert_false(ok_value("display_name", "del\x7f"));
    assert_false(ok_value("display_name", "c1 \xc2\x9b"
                                          "31m")); /* U+009B CSI */
    assert_false(ok_value("display_name", "bidi \xe2\x80\xae"
                                          "gnp.exe"));
    assert_false(ok_value("display_name", "sep \xe2\x80\xa8"));
    assert_false(ok_value("display_name", "bad \xff utf8"));
    /* Free text that allows new lines says so: description. */
    assert_true(ok_value("description", "first line\nsecond\tline"));
    assert_false(ok_value("description", "carriage\rreturn"));
    assert_false(ok_value("description", "escape \x1b[2J"));
    assert_false(ok_value("reason", "revoked\x1b]0;owned\x07"));
}

static void identifiers_have_alphabets(void **state)
{
    (void)state;
    assert_true(ok_value("resource_id", "mcp-github"));
    assert_false(ok_value("resource_id", "mcp github")); /* a space */
    assert_true(ok_value("intended_use", "mcp_server_env"));
    assert_false(ok_value("intended_use", "MCP"));
    assert_false(ok_value("intended_use", "\xc3\xa9"));
    assert_true(ok_value("secret_id", "sec_0123456789ABCDEFGHJKMNPQRS"));
    assert_false(ok_value("secret_id", "sec 1"));
    assert_true(ok_value("owner_id", "alice@example.com"));
    assert_false(ok_value("owner_id", "alice|bob"));
    assert_false(ok_value("owner_id", "user:alice"));
    assert_true(ok_value("required_scopes", "read:jira-work"));
    assert_false(ok_value("required_scopes", "a\"b"));
    char id65[66];
    memset(id65, 'a', 65);
    id65[65] = '\0';
    assert_false(ok_value("secret_id", id65));
    id65[64] = '\0';
    assert_true(ok_value("secret_id", id65));
}

static void errors_never_echo_the_value(void **state)
{
    (void)state;
    cx_error_t e;
    assert_false(cx_contract_check_value("display_name", "CANARY\x1b[0m", true, &e));
    assert_int_equal(e.code, CX_ERR_INVALID_ARGUMENT);
    assert_null(strstr(e.message, "CANARY"));
    assert_non_null(strstr(e.message, "display_name"));
    assert_false(cx_contract_check_value("display_name", "", true, &e));
    assert_non_null(strstr(e.message, "required"));
    assert_true(cx_contract_check_value("display_name", "", false, &e));
}

/* ---- messages -------------------------------------------------------------------------------- */

static char *uses2[] = {"mcp_server_env", "http_authorization_header"};

static void create_request(Credex__V1__CreateSecretRequest *r, uint8_t *val)
{
    credex__v1__create_secret_request__init(r);
    r->idempotency_key = "3f0c6d1e-6f7a-4a53-9d43-2b8e0a4f5c11";
    r->kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_API_KEY;
    r->display_name = "OpenAI";
    r->description = "for the agent\nrotated monthly";
    r->provider = "openai";
    r->allowed_uses = uses2;
    r->n_allowed_uses = 2;
    r->value.data = val;
    r->value.len = 4;
}

static bool check(const ProtobufCMessage *m, cx_error_t *e)
{
    cx_error_clear(e);
    return cx_contract_check(m, e);
}

static void message_walk(void **state)
{
    (void)state;
    uint8_t val[4] = {0, 1, 2, 255}; /* values are bytes, byte-exact: anything goes */
    Credex__V1__CreateSecretRequest r;
    cx_error_t e;
    create_request(&r, val);
    assert_true(check(&r.base, &e));

    create_request(&r, val);
    r.display_name = "x\x1b[2J";
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message,
                        "display_name: must be 1..128 characters of single-line text without "
                        "control characters");

    char *dup[] = {"a", "b", "a"};
    create_request(&r, val);
    r.allowed_uses = dup;
    r.n_allowed_uses = 3;
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "allowed_uses[2]: repeats an earlier entry");

    char *many[17];
    char names[17][4];
    for (int i = 0; i < 17; i++) {
        snprintf(names[i], sizeof(names[i]), "u%d", i);
        many[i] = names[i];
    }
    create_request(&r, val);
    r.allowed_uses = many;
    r.n_allowed_uses = 17;
    assert_false(check(&r.base, &e));
    assert_non_null(strstr(e.message, "at most 16"));

    create_request(&r, val);
    r.value.len = 0;
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "value is required");

    create_request(&r, val);
    r.kind = (Credex__V1__SecretKind)42; /* open proto3 enum: the number arrives as sent */
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "kind: unknown value");

    create_request(&r, val);
    r.kind = CREDEX__V1__SECRET_KIND__SECRET_KIND_UNSPECIFIED;
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "kind is required");
}

/* The table of required fields is searched by name (bsearch): an entry out of order is never
 * found and its fields silently become optional. The store requests around the CMK rotation's. */
static void required_fields_are_found(void **state)
{
    (void)state;
    cx_error_t e;
    Credex__V1__StoreRewrapDataKeysRequest rw = CREDEX__V1__STORE_REWRAP_DATA_KEYS_REQUEST__INIT;
    rw.limit = 10;
    assert_false(check(&rw.base, &e));
    assert_string_equal(e.message, "run_id is required");
    rw.run_id = "rw-0123";
    assert_true(check(&rw.base, &e));
    Credex__V1__StoreRevokeSecretRequest rv = CREDEX__V1__STORE_REVOKE_SECRET_REQUEST__INIT;
    rv.secret_id = "sec_0123456789ABCDEFGHJKMNPQRS";
    assert_false(check(&rv.base, &e));
    assert_string_equal(e.message, "caller is required");
    Credex__V1__StoreResolveRequest rs = CREDEX__V1__STORE_RESOLVE_REQUEST__INIT;
    rs.secret_id = rv.secret_id;
    assert_false(check(&rs.base, &e));
    assert_string_equal(e.message, "caller is required");
    Credex__V1__StoreRotateSecretRequest rt = CREDEX__V1__STORE_ROTATE_SECRET_REQUEST__INIT;
    rt.secret_id = rv.secret_id;
    assert_false(check(&rt.base, &e));
    assert_string_equal(e.message, "caller is required");
}

static void nested_paths_and_maps(void **state)
{
    (void)state;
    Credex__V1__RetrieveRequest r = CREDEX__V1__RETRIEVE_REQUEST__INIT;
    Credex__V1__ResourceContext rc = CREDEX__V1__RESOURCE_CONTEXT__INIT;
    Credex__V1__ResourceContext__AttributesEntry a1 =
        CREDEX__V1__RESOURCE_CONTEXT__ATTRIBUTES_ENTRY__INIT;
    Credex__V1__ResourceContext__AttributesEntry *attrs[1] = {&a1};
    cx_error_t e;
    r.secret_ref = "sec_0123456789ABCDEFGHJKMNPQRS";
    r.intended_use = "mcp_server_env";
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "resource_context is required");
    r.resource_context = &rc;
    assert_false(check(&r.base, &e));
    assert_string_equal(e.message, "resource_context.resource_type is required");
    rc.resource_type = "mcp_server";
    rc.resource_id = "github server"; /* a space */
    assert_false(check(&r.base, &e));
    assert_non_null(strstr(e.message, "resource_context.resource_id: must be 1..128"));
    rc.resource_id = "github";
    a1.key = "region";
    a1.value = "eu\x1b";
    rc.attributes = attrs;
    rc.n_attributes = 1;
    assert_false(check(&r.base, &e));
    assert_non_null(strstr(e.message, "resource_context.attributes[0].value"));
    a1.value = "eu-west-1";
    assert_true(check(&r.base, &e));
}

static void reply_of_gateway_is_checked_by_name(void **state)
{
    (void)state;
    /* AuditEvent.reason is a reason code; RevokeSecretRequest.reason is a human note. */
    Credex__V1__AuditEvent ev = CREDEX__V1__AUDIT_EVENT__INIT;
    cx_error_t e;
    ev.event_type = "secret.retrieved";
    ev.outcome = CREDEX__V1__AUDIT_OUTCOME__AUDIT_OUTCOME_DENIED;
    ev.resource_type = "secret_ref";
    ev.reason = "invalid_argument";
    assert_true(check(&ev.base, &e));
    ev.reason = "not a code";
    assert_false(check(&ev.base, &e));
    Credex__V1__RevokeSecretRequest rv = CREDEX__V1__REVOKE_SECRET_REQUEST__INIT;
    rv.secret_id = "sec_0123456789ABCDEFGHJKMNPQRS";
    rv.reason = "leaked in a screenshot";
    assert_true(check(&rv.base, &e));
}

/* ---- the wire -------------------------------------------------------------------------------- */

static size_t pack_get(const char *id, uint8_t *buf)
{
    Credex__V1__GetSecretRequest g = CREDEX__V1__GET_SECRET_REQUEST__INIT;
    g.secret_id = (char *)id;
    return protobuf_c_message_pack(&g.base, buf);
}

static bool wire_ok(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t n)
{
    cx_error_t e;
    return cx_contract_wire_check(d, b, n, &e);
}

static void wire_strings(void **state)
{
    (void)state;
    uint8_t buf[64];
    size_t n = pack_get("sec_ABCDEFGH", buf);
    const ProtobufCMessageDescriptor *d = &credex__v1__get_secret_request__descriptor;
    assert_true(wire_ok(d, buf, n));
    /* A NUL inside the string: protobuf-c would unpack "sec_" and drop the rest silently. */
    buf[2 + 4] = 0;
    assert_false(wire_ok(d, buf, n));
    Credex__V1__GetSecretRequest *u = credex__v1__get_secret_request__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_string_equal(u->secret_id, "sec_"); /* what the check prevents */
    credex__v1__get_secret_request__free_unpacked(u, NULL);
    n = pack_get("sec_ABCDEFGH", buf);
    buf[3] = 0xC3; /* a lead byte without its continuation */
    assert_false(wire_ok(d, buf, n));
    cx_error_t e;
    assert_false(cx_contract_wire_check(d, buf, n, &e));
    assert_string_equal(e.message, "secret_id: must be UTF-8 text without NUL characters");
}

static void wire_varint_ranges(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__rotate_secret_request__descriptor;
    /* expected_version (field 2, uint32) = 2^32 + 1: protobuf-c would keep the low bits (1). */
    const uint8_t wide[] = {0x10, 0x81, 0x80, 0x80, 0x80, 0x10};
    assert_false(wire_ok(d, wide, sizeof(wide)));
    const uint8_t fits[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_true(wire_ok(d, fits, sizeof(fits)));
    /* An enum (int32): -1 sign-extended to ten bytes is in range; 2^31 is not. */
    const ProtobufCMessageDescriptor *g = &credex__v1__get_secret_request__descriptor;
    (void)g;
    const ProtobufCMessageDescriptor *c = &credex__v1__create_secret_request__descriptor;
    const uint8_t neg[] = {0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_true(wire_ok(c, neg, sizeof(neg)));
    const uint8_t big[] = {0x18, 0x80, 0x80, 0x80, 0x80, 0x08};
    assert_false(wire_ok(c, big, sizeof(big)));
    /* A bool of 2 (ShareSecretRequest.preview_only, field 4). */
    const uint8_t b2[] = {0x20, 0x02};
    assert_false(wire_ok(&credex__v1__share_secret_request__descriptor, b2, sizeof(b2)));
    /* More than 64 bits. */
    const uint8_t huge[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    assert_false(wire_ok(d, huge, sizeof(huge)));
}

static void wire_shapes(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *d = &credex__v1__get_secret_request__descriptor;
    const uint8_t unknown[] = {0xF8, 0x01, 0x05, 0x0A, 0x01, 'x'}; /* field 31 varint, then 1 */
    assert_true(wire_ok(d, unknown, sizeof(unknown)));
    const uint8_t truncated[] = {0x0A, 0x05, 'a', 'b'};
    assert_false(wire_ok(d, truncated, sizeof(truncated)));
    const uint8_t group[] = {0x0B, 0x0C};
    assert_false(wire_ok(d, group, sizeof(group)));
    const uint8_t wrong_type[] = {0x08, 0x01}; /* secret_id as a varint */
    assert_false(wire_ok(d, wrong_type, sizeof(wrong_type)));
    const uint8_t field0[] = {0x00, 0x01};
    assert_false(wire_ok(d, field0, sizeof(field0)));
    assert_true(wire_ok(d, NULL, 0));
    /* Nested: ResourceContext.resource_id (field 3 -> field 2) with invalid UTF-8. */
    const uint8_t nested[] = {0x1A, 0x04, 0x12, 0x02, 0xC3, 0x28};
    assert_false(wire_ok(&credex__v1__retrieve_request__descriptor, nested, sizeof(nested)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_request_field_has_a_rule),
        cmocka_unit_test(utf8_decoder),
        cmocka_unit_test(text_counts_characters_not_bytes),
        cmocka_unit_test(text_refuses_controls_and_spoofing),
        cmocka_unit_test(identifiers_have_alphabets),
        cmocka_unit_test(errors_never_echo_the_value),
        cmocka_unit_test(message_walk),
        cmocka_unit_test(required_fields_are_found),
        cmocka_unit_test(nested_paths_and_maps),
        cmocka_unit_test(reply_of_gateway_is_checked_by_name),
        cmocka_unit_test(wire_strings),
        cmocka_unit_test(wire_varint_ranges),
        cmocka_unit_test(wire_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
