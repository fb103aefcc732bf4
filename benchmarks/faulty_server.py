"""The real service (``create_app`` + uvicorn, as ``recfunnel serve`` runs it) with one retrieval
channel made to raise or hang, for ``bench_reliability.py``.

The fault is armed once the service is ready (the model's warm-up runs the funnel
directly, and a raising channel would make the model refuse to load):

    python benchmarks/faulty_server.py --model DIR --port 8000 --channel itemcf --mode hang --hang-s 2

``raise``: every call raises ``RuntimeError``. ``hang``: every call sleeps ``--hang-s``
seconds before answering (so the budgeted runner sees late calls again and again).
Other options are the service's budgets (defaults as ``recfunnel serve``).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path


class Faulty:
    """Stands in for a retrieval channel: raises or hangs once ``armed``."""

    def __init__(self, inner, mode: str, hang_s: float):
        self.name = inner.name
        self.inner, self.mode, self.hang_s = inner, mode, hang_s
        self.armed = False
        self.calls = 0

    def retrieve(self, request, k):
        if self.armed:
            self.calls += 1
            if self.mode == "raise":
                raise RuntimeError("channel made to raise by the benchmark")
            if self.mode == "hang":
                time.sleep(self.hang_s)
        return self.inner.retrieve(request, k)

    def __getattr__(self, name):  # anything else (fit state, publish hooks) from the real channel
        return getattr(self.inner, name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--channel", default="itemcf")
    parser.add_argument("--mode", choices=("raise", "hang"), required=True)
    parser.add_argument("--hang-s", type=float, default=2.0)
    parser.add_argument("--budget-ms", type=float, default=250.0)
    parser.add_argument("--channel-timeout-ms", type=float, default=100.0)
    parser.add_argument("--stage-timeout-ms", type=float, default=100.0)
    args = parser.parse_args(argv)

    import uvicorn

    from recfunnel.pipeline.online.funnel import Funnel
    from recfunnel.serving.app import create_app
    from recfunnel.serving.settings import ServingSettings

    faults: list[Faulty] = []

    def loader(path: Path) -> Funnel:
        funnel = Funnel.load(path)
        for i, channel in enumerate(funnel.channels):
            if channel.name == args.channel:
                funnel.channels[i] = Faulty(channel, args.mode, args.hang_s)
                faults.append(funnel.channels[i])
        if not faults:
            raise SystemExit(f"no channel named {args.channel!r}")
        return funnel

    settings = ServingSettings(model_dir=args.model, port=args.port, events_url="memory://",
                               budget_ms=args.budget_ms, channel_timeout_ms=args.channel_timeout_ms,
                               stage_timeout_ms=args.stage_timeout_ms, load_in_background=True)
    app = create_app(settings, loader=loader)
    service = app.state.service

    def arm() -> None:
        while not service.ready:
            time.sleep(0.01)
        for f in faults:
            f.armed = True

    # armed within 10 ms of the service becoming ready (after its warm-up); the benchmark
    # sends probes until one answer is degraded and does not count them
    threading.Thread(target=arm, daemon=True).start()
    uvicorn.run(app, host="127.0.0.1", port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
