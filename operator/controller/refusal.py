"""What a failed reconcile tells the user: whether the API server refused a write for good or may
accept it later, and the status and Event that say so.

A refusal (a spec the operator cannot read, a child the API server rejects) is Stalled at once with
the words that name the field; a write that may pass later (no connection, 429, a 5xx that is not a
validation error) is Reconciling with reason ApplyRetrying, the last error and the attempt count,
while the shell retries with back-off. Neither is ever only a log line.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import HTTPError

from negrl_operator.api.experiment import KIND
from negrl_operator.api.status import ExperimentStatus, rfc3339
from negrl_operator.api.termination import shorten
from negrl_operator.reconcile.condition import APPLY_RETRYING, EventRecord, rejected, retrying
from negrl_operator.reconcile.manifest import Owner

if TYPE_CHECKING:
    from negrl_operator.controller.shell import Runtime

log = logging.getLogger("negrl.operator")

# The server refused what was sent; sending it again changes nothing (405/406/413/415: a request the
# server will never take; 404: a missing kind or namespace, e.g. JobSet's CRD not installed).
REFUSED_STATUSES = (400, 403, 404, 405, 406, 413, 415, 422)
# A 500 that is a decoding or validation failure: a server-side apply of a Job whose cpu request is
# "lots" answers 500 "failed to convert new object (...) to proper version: unable to convert unstructured
# object to batch/v1, Kind=Job: quantities must match the regular expression ...".
VALIDATION_MARKERS = ("quantities must match", "failed to convert", "unable to convert", "failed to create typed",
                      "unable to decode", "cannot unmarshal", "invalid value", "is invalid")
MESSAGE_CHARS = 900


def api_message(error: ApiException) -> str:
    """The API server's own message (its Status body), else the HTTP reason."""
    try:
        found = json.loads(error.body or "{}").get("message")
    except (ValueError, AttributeError):
        found = None
    return shorten(" ".join(str(found or error.reason or "no message").split()), MESSAGE_CHARS)


def api_reason(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("reason") or "")
    except (ValueError, AttributeError):
        return ""


def refused(error: ApiException) -> bool:
    """True when retrying the same write cannot succeed: a client error other than a conflict or a
    throttle, or a 500 that reports a decoding or validation failure."""
    if error.status in REFUSED_STATUSES:
        return True
    if error.status == 409:
        return api_reason(error) != "Conflict"  # AlreadyExists and the like; a Conflict is a race that passes
    if error.status == 500:
        message = api_message(error).lower()
        return any(marker in message for marker in VALIDATION_MARKERS)
    return False


def spec_problems(error: ValidationError, limit: int = 3) -> str:
    """One line naming each invalid field as spec.<path> and what is wrong with it (no input dump, no URL)."""
    issues = error.errors()
    parts = []
    for issue in issues[:limit]:
        text = str(issue["msg"]).removeprefix("Value error, ")
        loc = ".".join(str(part) for part in issue["loc"])
        parts.append(f"spec.{loc}: {text}" if loc else f"spec.{text}")
    more = f"; and {len(issues) - limit} more" if len(issues) > limit else ""
    return shorten(" ".join(("invalid spec: " + "; ".join(parts) + more).split()), MESSAGE_CHARS)


def report(runtime: Runtime, body, reason: str, message: str) -> None:
    """The status that says why the experiment does not progress (Stalled for a refusal, Reconciling
    ApplyRetrying for a retry), and a Warning Event when the reason or a refusal's words are news."""
    meta = body["metadata"]
    owner = Owner(meta["name"], meta["namespace"], meta["uid"])
    recorded = runtime.recorded(owner.uid, body.get("status"))
    generation, now = int(meta.get("generation") or 0), rfc3339(datetime.now(UTC))
    status = (retrying(recorded, message, generation, now) if reason == APPLY_RETRYING
              else rejected(recorded, reason, message, generation, now))
    if status != recorded:
        _write(runtime, owner, status, reason)
    if _news(recorded, reason, message):
        event = EventRecord("Warning", reason, message[:1000])
        if runtime.events is not None:
            runtime.events.post(owner, event)
        else:
            try:
                runtime.kube.post_event(owner, event)
            except (ApiException, HTTPError, OSError) as error:
                log.warning("could not post %s for %s/%s: %s", reason, owner.namespace, owner.name, error)


def _news(recorded: ExperimentStatus, reason: str, message: str) -> bool:
    ready = recorded.condition("Ready")
    if ready is None or ready.reason != reason:
        return True
    return reason != APPLY_RETRYING and ready.message != message  # a retry's attempt count is no news


def _write(runtime: Runtime, owner: Owner, status: ExperimentStatus, reason: str) -> None:
    try:
        runtime.kube.merge_patch(KIND, owner.namespace, owner.name,
                                 {"status": status.model_dump(mode="json", by_alias=True)}, "status")
        runtime.written[owner.uid] = status
    except (ApiException, HTTPError, OSError) as error:  # the server may be the problem: the next attempt reports again
        log.warning("could not report %s on %s/%s: %s", reason, owner.namespace, owner.name, error)
