"""``python tests/hardening/serve_fake_engine.py``: the real server (``runtime serve``'s code path, settings from the
FLORENCE_* environment) on the fake engine, for tests that need a server process where the model is not the point.

    --delay S      each request holds the engine S seconds (default 0.02)
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

# The checkout this file is in, ahead of an installed copy of the project (run as a script, the script's folder is
# first on sys.path, not the checkout); and the runtime tests' helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fakes import FakeEngine

from runtime.config import Settings
from runtime.server.logs import configure_logging
from runtime.server.serve import build_server
from runtime.server.services import Services


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.02)
    args = parser.parse_args()
    settings = Settings.from_env()
    configure_logging(settings.server.log_level)
    engine = FakeEngine(max_new_tokens=settings.limits.max_new_tokens)
    engine.delay_s = args.delay
    engine.requests = deque(maxlen=1)  # type: ignore[assignment]  # it keeps every request (and image) for tests
    services = Services(settings, engine_loader=lambda path, options: engine)
    build_server(services).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
