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
from maestro_gateway.transports.grpc.reflection import ReflectionError, fetch_descriptors
from maestro_gateway.transports.grpc.transport import GrpcTransport
from maestro_gateway.transports.grpc.values import build_request, message_converter, to_plain

__all__ = [
    "ChannelPool",
    "Descriptors",
    "GrpcTransport",
    "ReflectionError",
    "build_pool",
    "build_request",
    "channel_credentials",
    "channel_options",
    "compile_protos",
    "fetch_descriptors",
    "load_descriptors",
    "load_protoset",
    "message_converter",
    "to_plain",
]
