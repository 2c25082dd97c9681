"""The stable error codes of the client protocol, shared by every front end.

Clients switch on these names; README.md ("Client protocol") says which are
retryable. Pure constants: the native JSON endpoint and (later) the RESP front
end map them to their own wire forms.
"""

BAD_REQUEST = "BAD_REQUEST"  # malformed request, wrong types, unknown argument
UNKNOWN_COMMAND = "UNKNOWN_COMMAND"  # no plugin declared this command
TOO_LARGE = "TOO_LARGE"  # request above client.max_request_bytes
NO_LEADER = "NO_LEADER"  # retryable: no leader known within the request timeout
NOT_LEADER = "NOT_LEADER"  # retryable: "forward": false was asked, or leadership was lost
TIMEOUT = "TIMEOUT"  # retryable with the same client/seq: the outcome is unknown
OVERLOADED = "OVERLOADED"  # retryable: too many requests pending on this node
SESSION_EXPIRED = "SESSION_EXPIRED"  # the (client, seq) is older than the session remembers
INTERNAL = "INTERNAL"  # a plugin raised something other than CommandError
SHUTTING_DOWN = "SHUTTING_DOWN"  # retryable elsewhere: the node is stopping
FENCED = "FENCED"  # a write fenced to a term whose leadership is over: never applied
SNAPSHOT_FAILED = "SNAPSHOT_FAILED"  # snapshot_take/read: a snapshot file could not be written/read
NO_SNAPSHOT = "NO_SNAPSHOT"  # snapshot_read: no published snapshot file of that name on this node

# Raised by the built-in KV state machine (CommandError); the state is unchanged.
BAD_ARG = "BAD_ARG"  # an argument out of range (empty key, negative TTL, ...)
WRONG_TYPE = "WRONG_TYPE"  # the key holds a value of another type (incr of a string)
OVERFLOW = "OVERFLOW"  # the result leaves the signed 64-bit range

ALL = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str))
