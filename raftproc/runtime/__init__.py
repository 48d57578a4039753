"""The edges that do IO, each with one job:

addresses  HOST:PORT parsing            codec      CBOR bodies for peers and clients
entries    log entries on the wire      framing    length-prefixed frames
identity   data-dir incarnation, hello  logging    JSON-lines structured logs
loop       selectors event loop         members    driving a membership change
requests   typed client requests        snapshot   snapshot files
storage    recovery at start-up         transfer   snapshot streaming
wal        the write-ahead log and its background sync
"""
