"""Florence-2 checkpoint to ONNX model folder: ``python -m export SOURCE --out DIR`` (see ``export.exporter``)."""
