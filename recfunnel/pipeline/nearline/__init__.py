"""Nearline layer: user events update histories, filters, counters and look-alike vectors within a second.

See :mod:`recfunnel.pipeline.nearline.state`.
"""

from recfunnel.pipeline.nearline.state import (
    NearlineConfig,
    NearlineState,
    append_events,
    events_to_frame,
)

__all__ = ["NearlineConfig", "NearlineState", "append_events", "events_to_frame"]
