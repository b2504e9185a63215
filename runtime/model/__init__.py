"""The model's maths on arrays: the towers' ONNX sessions and preprocessing, frame
sampling, the NumPy router, the analytic head and its sums, the experts and the open-set
scores.

It imports nothing from the other rooms: everything above reads bundles into these."""
