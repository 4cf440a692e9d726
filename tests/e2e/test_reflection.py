"""Server reflection as Python's grpcio-reflection client sees it: it speaks only
grpc.reflection.v1alpha, which common/rpc serves as an alias of v1 (rpc_reflection.c)."""

from __future__ import annotations

from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def test_grpcio_reflection_lists_and_describes_the_gateway(stack):
    with stack.channel("gateway") as ch:
        db = ProtoReflectionDescriptorDatabase(ch)
        services = set(db.get_services())
        assert {"credex.v1.Retrieval", "credex.v1.Secrets", "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"} <= services
        pool = DescriptorPool(db)
        retrieval = pool.FindServiceByName("credex.v1.Retrieval")
        assert retrieval.file.name == "credex/v1/gateway.proto"
        assert "Retrieve" in retrieval.methods_by_name
        # Its request type comes from the same file, its imports from theirs.
        request = retrieval.methods_by_name["Retrieve"].input_type
        assert request.full_name == "credex.v1.RetrieveRequest"
        common = pool.FindFileByName("credex/v1/common.proto")
        assert common.package == "credex.v1"
