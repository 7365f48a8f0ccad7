from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Empty(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Fault(_message.Message):
    __slots__ = ("method", "code", "message", "times", "delay_ms", "retry_after_ms")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TIMES_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    method: str
    code: str
    message: str
    times: int
    delay_ms: int
    retry_after_ms: int
    def __init__(self, method: _Optional[str] = ..., code: _Optional[str] = ..., message: _Optional[str] = ..., times: _Optional[int] = ..., delay_ms: _Optional[int] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class Call(_message.Message):
    __slots__ = ("method", "request_json", "metadata", "outcome", "started_unix_ms", "ended_unix_ms", "rpc")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_JSON_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    RPC_FIELD_NUMBER: _ClassVar[int]
    method: str
    request_json: str
    metadata: _containers.ScalarMap[str, str]
    outcome: str
    started_unix_ms: int
    ended_unix_ms: int
    rpc: str
    def __init__(self, method: _Optional[str] = ..., request_json: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., outcome: _Optional[str] = ..., started_unix_ms: _Optional[int] = ..., ended_unix_ms: _Optional[int] = ..., rpc: _Optional[str] = ...) -> None: ...

class CallList(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[Call]
    def __init__(self, calls: _Optional[_Iterable[_Union[Call, _Mapping]]] = ...) -> None: ...
