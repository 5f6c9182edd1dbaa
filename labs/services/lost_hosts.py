"""Hosts that stopped answering: their sessions end with a message (beat, on the web queue).

A host repairs its own sessions when it restarts (labs/host/reconcile.py); a host that does not
come back cannot. Its advert expires 30 s after its agent's last refresh; once it has been gone
for LABS_HOST_LOST_S more, every session there that holds or awaits a VM fails, so its learner
is told and can start again on another host. If the host returns, its reconciler reaps those VMs.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings

from labs import host_registry
from labs.models import LabSession
from labs.redis_names import host_missing_key
from labs.services.sessions import end_session
from labs.states import VM_LIVE, SessionState

log = logging.getLogger(__name__)
LOST_MESSAGE = "The lab's host stopped answering. Please start the lab again."


def end_sessions_on_lost_hosts() -> list[str]:
    """Fail the live sessions of every host that has had no advert for LABS_HOST_LOST_S."""
    client = host_registry.redis_client()
    advertised = {advert.name for advert in host_registry.list_hosts(client)}
    used = set(LabSession.objects.filter(state__in=VM_LIVE).exclude(host="").values_list("host", flat=True))
    ended: list[str] = []
    for host in sorted(used):
        key = host_missing_key(host)
        if host in advertised:
            client.delete(key)
            continue
        client.set(key, time.time(), nx=True, ex=24 * 3600)
        missing_since = float(client.get(key) or time.time())
        if time.time() - missing_since < settings.LABS_HOST_LOST_S:
            continue
        live = LabSession.objects.filter(host=host, state__in=VM_LIVE).values_list("id", flat=True)
        lost = [sid for sid in live if end_session(sid, SessionState.FAILED, LOST_MESSAGE)]
        if lost:
            log.warning("host %s lost (no advert for %.0f s): failed %s", host, time.time() - missing_since, lost)
        ended += lost
    return ended
