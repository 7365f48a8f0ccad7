"""The dynamic gRPC transport: reflection or descriptor files, a channel pool, plain values."""

from maestro_gateway.transports.grpc.channels import (
    ChannelPool,
    channel_credentials,
    channel_options,
)
from maestro_gateway.transports.grpc.descriptors import (
    Descriptors,
    build_pool,
    compile_protos,
    load_descriptors,
    load_protoset,
)
from maestro_gateway.transports.grpc.envelope import ENVELOPE_SERVICE
from maestro_gateway.transports.grpc.protocol import Schema, load_schema, route
from maestro_gateway.transports.grpc.reflection import ReflectionError, fetch_descriptors
from maestro_gateway.transports.grpc.transport import GrpcTransport
from maestro_gateway.transports.grpc.values import build_request, message_converter, to_plain

__all__ = [
    "ENVELOPE_SERVICE",
    "ChannelPool",
    "Descriptors",
    "GrpcTransport",
    "ReflectionError",
    "Schema",
    "build_pool",
    "build_request",
    "channel_credentials",
    "channel_options",
    "compile_protos",
    "fetch_descriptors",
    "load_descriptors",
    "load_protoset",
    "load_schema",
    "message_converter",
    "route",
    "to_plain",
]
