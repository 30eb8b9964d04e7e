"""Edge export: ONNX / INT8 graphs, parity checks, the model sidecar."""
