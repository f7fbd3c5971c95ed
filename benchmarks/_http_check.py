"""The response check the HTTP provider's ``HttpEventTrigger`` runs on every poll of the baseline.

``HttpEventTrigger`` reloads this module and awaits :func:`job_finished` with each response;
it is what a user would write to wait for a Nyne job with the generic HTTP trigger.
"""

from __future__ import annotations

import json
from typing import Any


async def job_finished(response: Any) -> bool:
    """True once ``data.status`` is terminal (``completed`` or ``failed``)."""
    return json.loads(response.content)["data"]["status"] in ("completed", "failed")
