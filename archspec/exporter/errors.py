"""Export errors: nothing is written when one is raised."""

from __future__ import annotations

from ..errors import ArchspecError


class ExportError(ArchspecError):
    """The export failed or its verification did; nothing was written."""
