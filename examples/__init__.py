"""The recconv examples: one script per modality on one shared kit (:mod:`examples.kit`).

Run one as ``python examples/audio_keywords.py`` or, from the clone's root,
``python -m examples.audio_keywords``. :func:`registry` finds every example in this folder.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any


def registry() -> dict[str, Any]:
    """Every example, by name: the modules beside this file that define an ``EXAMPLE`` record
    (:class:`examples.kit.cli.Example`). A new example is one new module; nothing else lists it."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        if not info.ispkg:
            record = getattr(importlib.import_module(f"{__name__}.{info.name}"), "EXAMPLE", None)
            if record is not None:
                found[record.name] = record
    return found
