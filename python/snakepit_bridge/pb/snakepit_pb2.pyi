from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BatchItem(_message.Message):
    __slots__ = ["args_json", "binary_args", "metadata", "request_id"]
    class BinaryArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    BINARY_ARGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    args_json: bytes
    binary_args: _containers.ScalarMap[str, bytes]
    metadata: _containers.ScalarMap[str, str]
    request_id: str
    def __init__(self, args_json: _Optional[bytes] = ..., binary_args: _Optional[_Mapping[str, bytes]] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class BatchItemResult(_message.Message):
    __slots__ = ["error", "result"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    error: ToolError
    result: Payload
    def __init__(self, result: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ...) -> None: ...

class CallOptions(_message.Message):
    __slots__ = ["affinity", "idempotent", "pool", "queue_timeout_us"]
    class Affinity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    AFFINITY_FIELD_NUMBER: _ClassVar[int]
    AFFINITY_HINT: CallOptions.Affinity
    AFFINITY_STRICT_FAIL_FAST: CallOptions.Affinity
    AFFINITY_STRICT_QUEUE: CallOptions.Affinity
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    QUEUE_TIMEOUT_US_FIELD_NUMBER: _ClassVar[int]
    affinity: CallOptions.Affinity
    idempotent: bool
    pool: str
    queue_timeout_us: int
    def __init__(self, idempotent: bool = ..., affinity: _Optional[_Union[CallOptions.Affinity, str]] = ..., queue_timeout_us: _Optional[int] = ..., pool: _Optional[str] = ...) -> None: ...

class CleanupSessionRequest(_message.Message):
    __slots__ = ["session_id"]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CleanupSessionResponse(_message.Message):
    __slots__ = ["existed"]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    existed: bool
    def __init__(self, existed: bool = ...) -> None: ...

class DescribeToolsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class DescribeToolsResponse(_message.Message):
    __slots__ = ["adapter", "pid", "python_version", "tools"]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    pid: int
    python_version: str
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ..., adapter: _Optional[str] = ..., python_version: _Optional[str] = ..., pid: _Optional[int] = ...) -> None: ...

class ExecuteHostToolRequest(_message.Message):
    __slots__ = ["args_json", "session_id", "tool_name", "worker_id"]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    args_json: bytes
    session_id: str
    tool_name: str
    worker_id: str
    def __init__(self, tool_name: _Optional[str] = ..., args_json: _Optional[bytes] = ..., session_id: _Optional[str] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ExecuteHostToolResponse(_message.Message):
    __slots__ = ["error", "result"]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    error: ToolError
    result: Payload
    def __init__(self, result: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ...) -> None: ...

class ExecuteToolRequest(_message.Message):
    __slots__ = ["args_json", "batch", "binary_args", "metadata", "options", "request_id", "session_id", "tool_name"]
    class BinaryArgsEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    BINARY_ARGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    args_json: bytes
    batch: _containers.RepeatedCompositeFieldContainer[BatchItem]
    binary_args: _containers.ScalarMap[str, bytes]
    metadata: _containers.ScalarMap[str, str]
    options: CallOptions
    request_id: str
    session_id: str
    tool_name: str
    def __init__(self, tool_name: _Optional[str] = ..., args_json: _Optional[bytes] = ..., binary_args: _Optional[_Mapping[str, bytes]] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., options: _Optional[_Union[CallOptions, _Mapping]] = ..., batch: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class ExecuteToolResponse(_message.Message):
    __slots__ = ["batch", "duration_ms", "error", "result"]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    batch: _containers.RepeatedCompositeFieldContainer[BatchItemResult]
    duration_ms: float
    error: ToolError
    result: Payload
    def __init__(self, result: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[_Union[ToolError, _Mapping]] = ..., duration_ms: _Optional[float] = ..., batch: _Optional[_Iterable[_Union[BatchItemResult, _Mapping]]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ["session_id"]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ["session_id", "worker_id"]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ["server_time_unix_ms", "session_valid"]
    SERVER_TIME_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    SESSION_VALID_FIELD_NUMBER: _ClassVar[int]
    server_time_unix_ms: int
    session_valid: bool
    def __init__(self, session_valid: bool = ..., server_time_unix_ms: _Optional[int] = ...) -> None: ...

class InitializeSessionRequest(_message.Message):
    __slots__ = ["metadata", "session_id", "ttl_seconds"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    metadata: _containers.ScalarMap[str, str]
    session_id: str
    ttl_seconds: int
    def __init__(self, session_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class ListHostToolsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListHostToolsResponse(_message.Message):
    __slots__ = ["tools"]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    def __init__(self, tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ...) -> None: ...

class ParamSpec(_message.Message):
    __slots__ = ["default_json", "description", "name", "required", "type"]
    DEFAULT_JSON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    default_json: bytes
    description: str
    name: str
    required: bool
    type: str
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., required: bool = ..., default_json: _Optional[bytes] = ..., description: _Optional[str] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ["binary", "dtype", "json", "shape"]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    binary: bytes
    dtype: str
    json: bytes
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, json: _Optional[bytes] = ..., binary: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ["message"]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ["abandoned_calls", "abandoned_request_ids", "message", "oldest_abandoned_seconds", "pid", "uptime_seconds", "worker_id"]
    ABANDONED_CALLS_FIELD_NUMBER: _ClassVar[int]
    ABANDONED_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OLDEST_ABANDONED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    abandoned_calls: int
    abandoned_request_ids: _containers.RepeatedScalarFieldContainer[str]
    message: str
    oldest_abandoned_seconds: float
    pid: int
    uptime_seconds: float
    worker_id: str
    def __init__(self, message: _Optional[str] = ..., pid: _Optional[int] = ..., worker_id: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., abandoned_calls: _Optional[int] = ..., oldest_abandoned_seconds: _Optional[float] = ..., abandoned_request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RegisterToolsRequest(_message.Message):
    __slots__ = ["session_id", "tools", "worker_id"]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ..., session_id: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ...) -> None: ...

class RegisterToolsResponse(_message.Message):
    __slots__ = ["names"]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ["created_unix_ms", "last_accessed_unix_ms", "metadata", "session_id", "ttl_seconds"]
    class MetadataEntry(_message.Message):
        __slots__ = ["key", "value"]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ACCESSED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    created_unix_ms: int
    last_accessed_unix_ms: int
    metadata: _containers.ScalarMap[str, str]
    session_id: str
    ttl_seconds: int
    def __init__(self, session_id: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., last_accessed_unix_ms: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ToolChunk(_message.Message):
    __slots__ = ["data", "error", "is_final", "seq"]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    IS_FINAL_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    data: Payload
    error: ToolError
    is_final: bool
    seq: int
    def __init__(self, seq: _Optional[int] = ..., data: _Optional[_Union[Payload, _Mapping]] = ..., is_final: bool = ..., error: _Optional[_Union[ToolError, _Mapping]] = ...) -> None: ...

class ToolError(_message.Message):
    __slots__ = ["arg_path", "expected", "got", "kind", "message", "traceback", "type"]
    ARG_PATH_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    GOT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    arg_path: str
    expected: str
    got: str
    kind: str
    message: str
    traceback: str
    type: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., kind: _Optional[str] = ..., arg_path: _Optional[str] = ..., expected: _Optional[str] = ..., got: _Optional[str] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ["batch_max_size", "batch_max_wait_ms", "description", "doc", "max_concurrency", "name", "parameters", "returns", "supports_streaming", "timeout_seconds"]
    BATCH_MAX_SIZE_FIELD_NUMBER: _ClassVar[int]
    BATCH_MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    batch_max_size: int
    batch_max_wait_ms: float
    description: str
    doc: str
    max_concurrency: int
    name: str
    parameters: _containers.RepeatedCompositeFieldContainer[ParamSpec]
    returns: str
    supports_streaming: bool
    timeout_seconds: float
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ParamSpec, _Mapping]]] = ..., supports_streaming: bool = ..., max_concurrency: _Optional[int] = ..., timeout_seconds: _Optional[float] = ..., returns: _Optional[str] = ..., doc: _Optional[str] = ..., batch_max_size: _Optional[int] = ..., batch_max_wait_ms: _Optional[float] = ...) -> None: ...
