/* The message types fuzz_pjson reads each input as, shared with the corpus generator: credex.v1
 * requests and replies with maps, bytes, enums, int64; a oneof; pjson's test types with every
 * scalar, map key kind and proto2 presence. */
#ifndef CREDEX_FUZZ_FUZZ_PJSON_TYPES_H
#define CREDEX_FUZZ_FUZZ_PJSON_TYPES_H

#include "credex/v1/gateway.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "pjson_test.pb-c.h"
#include "pjson_test2.pb-c.h"

static const ProtobufCMessageDescriptor *const fuzz_pjson_types[] = {
    &credex__v1__secret_metadata__descriptor,
    &credex__v1__create_secret_request__descriptor,
    &credex__v1__retrieve_request__descriptor,
    &credex__v1__retrieve_response__descriptor,
    &credex__v1__list_secrets_response__descriptor,
    &credex__v1__get_health_response__descriptor,
    &grpc__reflection__v1__server_reflection_request__descriptor,
    &pjsontest__scalars__descriptor,
    &pjsontest__repeats__descriptor,
    &pjsontest__maps__descriptor,
    &pjsontest__node__descriptor,
    &pjsontest2__legacy__descriptor,
};
#define FUZZ_PJSON_NTYPES (sizeof(fuzz_pjson_types) / sizeof(fuzz_pjson_types[0]))

#endif
