"""A loaded bundle at work: the Recognizer (ONNX Runtime or TensorRT), zero-shot classes,
TensorRT engine building, and the watcher that swaps a new bundle in without a gap."""
