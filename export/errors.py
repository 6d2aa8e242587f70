"""Errors the exporter stops with. Each message says what was wrong and how to fix it.

ExportError                     base; ``python -m export`` prints the message and exits with ``exit_code``
├── MissingExportExtra          torch, transformers, optimum or onnx is not installed
├── SourceUnavailable           local folder missing, or the hub id cannot be reached or does not exist
├── NotAFlorence2Checkpoint     the source is not a Florence-2 checkpoint (native or remote-code format)
├── OutputNotEmpty              the output folder holds files and ``--force`` was not given
├── InsufficientDiskSpace       the estimated size of the export does not fit the free space
├── GraphExportFailed           tracing, merging or converting a graph raised
└── ValidationFailed            validation against PyTorch could not run to its end
    └── ParityFailed            an exported graph disagrees with PyTorch beyond its bound
"""

from __future__ import annotations

EXPORT_EXTRA_HINT = "pip install -e '.[export]'"


class ExportError(Exception):
    """Base of every error the exporter reports to its user."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingExportExtra(ExportError):
    exit_code = 3


class SourceUnavailable(ExportError):
    exit_code = 2


class NotAFlorence2Checkpoint(ExportError):
    exit_code = 2


class OutputNotEmpty(ExportError):
    exit_code = 2


class InsufficientDiskSpace(ExportError):
    exit_code = 4


class GraphExportFailed(ExportError):
    exit_code = 1


class ValidationFailed(ExportError):
    """The folder could not be shown equal to PyTorch; it is left without ``export.json`` (an incomplete export)."""

    exit_code = 5


class ParityFailed(ValidationFailed):
    """An exported graph disagrees with PyTorch; names the graph and the difference."""

    def __init__(self, graph: str, detail: str) -> None:
        super().__init__(f"parity check failed for {graph}: {detail}")
        self.graph = graph
        self.detail = detail
