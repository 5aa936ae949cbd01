"""The EAS-compatible surface: the queue-service routes, the watch, synchronous predict, the protobuf frames and
the SDK client."""
