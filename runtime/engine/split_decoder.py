"""A merged decoder made of its two parts, for folders that ship ``decoder_model`` and ``decoder_with_past_model``.

The engine drives one merged graph whose ``use_cache_branch`` input picks the branch. Some onnx-community folders
have no merged file for a variant, only its two parts, and OpenVINO runs only the parts; this class answers for
the merged graph and runs the part the branch flag names (ONNX Runtime or OpenVINO graphs alike). Each part is fed
only the inputs it declares, so the no-past part never sees the empty past and the with-past part never sees the
flag. Both parts hold the decoder's weights, so such a
decoder takes twice the memory of a merged one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from runtime.model_folder import DECODER

if TYPE_CHECKING:
    import onnxruntime as ort

    from runtime.engine.onnxruntime_backend import Graph

_BRANCH = "use_cache_branch"


class SplitDecoder:
    def __init__(self, no_past: Any, with_past: Any) -> None:
        self.name = DECODER
        self.no_past = no_past
        self.with_past = with_past
        self.path = with_past.path
        self.paths = (no_past.path, with_past.path)
        self.variant = with_past.variant
        self.inputs = {**no_past.inputs, **with_past.inputs}
        self.outputs = no_past.outputs
        self.metadata = {**no_past.metadata, **with_past.metadata}

    def part(self, feeds: Mapping[str, Any]) -> Any:
        """The part that runs ``feeds``: with past when the branch flag is set."""
        flag = feeds.get(_BRANCH)
        return self.with_past if flag is not None and bool(np.asarray(flag).reshape(-1)[0]) else self.no_past

    def run(self, feeds: Mapping[str, Any], outputs: Sequence[str] | None = None) -> list[np.ndarray]:
        return self.part(feeds).run(feeds, outputs)

    def run_bound(
        self,
        feeds: Mapping[str, Any],
        host_outputs: Sequence[str],
        device_outputs: Sequence[str],
        device: str,
        device_id: int,
    ) -> tuple[list[np.ndarray], list[ort.OrtValue]]:
        graph: Graph = self.part(feeds)  # IO binding: ONNX Runtime graphs only
        return graph.run_bound(feeds, host_outputs, device_outputs, device, device_id)
