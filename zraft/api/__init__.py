"""Client endpoint: wire protocol, sessions, request bookkeeping, and the Python client."""
