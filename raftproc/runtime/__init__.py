"""The edges that do IO: framing, codec, event loop, write-ahead log, logging."""
