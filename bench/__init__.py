"""``make bench``: how fast the ONNX Runtime engine is against PyTorch eager, against this machine's floors, and
behind the HTTP server under concurrent load.

The machine is shared and noisy, so the figures that matter are ratios measured side by side in the same run:
each contender runs in its own process, the same jobs alternate between them round after round, and the floors
(FLOPs over a measured matmul rate, weight bytes over a measured memory bandwidth) are measured in the same run.
"""
