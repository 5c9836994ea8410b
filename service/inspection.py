"""The names the web layer imports from here, now homed in ``service.core``.

Temporary: the web layer moves to service.core in the same change, and this module goes with it.
"""

from __future__ import annotations

from .core import MAX_PAGE, InspectionService, RequestContext, Upload

__all__ = ["MAX_PAGE", "InspectionService", "RequestContext", "Upload"]
