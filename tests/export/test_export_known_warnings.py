"""The export's filter drops exactly the transformers warnings it names, and lets every other one through."""

from __future__ import annotations

import io
import logging

import pytest

from export.cli import summary
from export.known_warnings import KNOWN_HARMLESS, KnownWarnings, silence_known_warnings


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.generation", logging.WARNING, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("Using a slow image processor as `use_fast` is unset and a slow processor was saved with this model.", False),
        ("The following generation flags are not valid and may be ignored: ['early_stopping']. Set ...", False),
        ("The following generation flags are not valid and may be ignored: ['early_stopping', 'top_p'].", True),
        ("Some weights of the model checkpoint were not used", True),
    ],
)
def test_only_the_known_harmless_warnings_are_dropped(message: str, shown: bool) -> None:
    assert KnownWarnings().filter(_record(message)) is shown


def test_the_filter_sits_on_transformers_handler() -> None:
    from transformers.utils import logging as transformers_logging

    silence_known_warnings()
    silence_known_warnings()  # once is enough; a second call adds nothing
    handlers = logging.getLogger("transformers").handlers
    assert handlers and all(sum(isinstance(f, KnownWarnings) for f in h.filters) == 1 for h in handlers)
    # the handler writes to the stderr of when transformers first logged (an earlier test's capture, in a full run):
    # read what it writes through a stream of this test's own, at the verbosity an export runs at
    stream = io.StringIO()
    streams = [(h, h.setStream(stream)) for h in handlers if isinstance(h, logging.StreamHandler)]
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_warning()
    try:
        transformers_logging.get_logger("transformers.models.auto").warning(KNOWN_HARMLESS[0] + " and ...")
        transformers_logging.get_logger("transformers.models.auto").warning("a warning that matters")
    finally:
        transformers_logging.set_verbosity(verbosity)
        for handler, previous in streams:
            handler.setStream(previous)
    err = stream.getvalue()
    assert "a warning that matters" in err and "slow image processor" not in err


def test_the_summary_prints_each_figure_with_its_bound() -> None:
    record = {
        "source": "ckpt", "source_format": "native", "export_seconds": 1.0, "dtypes": ["fp32", "int8"],
        "files": {"a": 1024},
        "parity": {
            "fp32": {"graphs": {"vision_encoder": {"max_abs_diff": 1e-5}},
                     "generation": {"token_exact": 8, "sequences": 8, "near_tie_divergences": []}},
            "int8": {"min_cosine_vs_fp32_graph": {"vision_encoder": 0.7466}, "bounds": {"vision_encoder": 0.5}},
        },
    }  # fmt: skip
    text = summary(record, __import__("pathlib").Path("out"))
    assert "vision_encoder 0.7466 >= 0.5" in text and "bound 0.0001 + 0.001" in text
    assert "validation passed" in text
