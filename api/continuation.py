"""``POST /api/jobs/{job_id}/continue``: a person's answers to a paused run.

The body answers every outstanding requirement of the job's ``input_required``
event, each by its id::

    {"answers": [
        {"id": "<requirement id>", "confirmed": true},                 # confirmation
        {"id": "<requirement id>", "confirmed": false, "note": "..."}, # rejection
        {"id": "<requirement id>", "values": {"<field>": <value>}},    # user input
        {"id": "<requirement id>", "result": "<text>"}                 # external execution
    ]}

202 with the job (now pending; a worker continues the run). 409 when the job
is not paused (already answered, finished, not yet paused): nothing changes. 422
when the answers do not fit the requirements, saying which and why.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from runstream.api import params
from runstream.api.auth import accepts_stream_token
from runstream.api.errors import ApiError, not_found
from runstream.api.payloads import ContinueBody, Job, RequirementAnswer, parse_continue
from runstream.api.tenancy import resolve_tenant
from runstream.core.logs import job_fields
from runstream.db import jobs
from runstream.db.status import Status

log = logging.getLogger("runstream.api")

# JSON values a user-input field of each declared type takes (bool is not an int here).
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
}


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_answers", message)


def _answer(requirement: dict[str, Any], answer: RequirementAnswer) -> dict[str, Any]:
    """One answer checked against its requirement, as the worker applies it."""
    kind = requirement["kind"]
    rid = requirement["id"]
    given = {name for name in ("confirmed", "note", "values", "result") if getattr(answer, name) is not None}
    if kind == "confirmation":
        if answer.confirmed is None or given - {"confirmed", "note"}:
            raise invalid(
                f"requirement {rid} ({requirement['tool_name']}) asks for confirmation: "
                'answer {"confirmed": true} or {"confirmed": false, "note": "..."}'
            )
        return {"id": rid, "kind": kind, "confirmed": answer.confirmed, "note": answer.note}
    if kind == "user_input":
        fields = {f["name"]: f for f in requirement.get("fields") or []}
        if answer.values is None or given != {"values"}:
            raise invalid(
                f"requirement {rid} ({requirement['tool_name']}) asks for input: "
                f'answer {{"values": {{...}}}} with {", ".join(fields) or "no fields"}'
            )
        missing = [name for name in fields if name not in answer.values]
        unknown = [name for name in answer.values if name not in fields]
        if missing or unknown:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"not asked for: {', '.join(unknown)}"] if unknown else []
            )
            raise invalid(f"requirement {rid} values: {'; '.join(parts)}")
        for name, value in answer.values.items():
            expected = FIELD_TYPES.get(fields[name]["type"])
            if value is None or (
                expected is not None
                and (not isinstance(value, expected) or (bool not in expected and isinstance(value, bool)))
            ):
                raise invalid(f"requirement {rid} values: {name} must be a {fields[name]['type']}")
        return {"id": rid, "kind": kind, "values": answer.values}
    if answer.result is None or given != {"result"}:
        raise invalid(
            f"requirement {rid} ({requirement['tool_name']}) asks for the result of running it: "
            'answer {"result": "..."}'
        )
    return {"id": rid, "kind": kind, "result": answer.result}


def check_answers(body: ContinueBody, requirements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every outstanding requirement answered exactly once, each as its kind asks."""
    by_id = {r["id"]: r for r in requirements}
    seen: set[str] = set()
    checked = []
    for answer in body.answers:
        if answer.id not in by_id:
            raise invalid(f"no outstanding requirement {answer.id!r}; this job asks for {', '.join(by_id)}")
        if answer.id in seen:
            raise invalid(f"requirement {answer.id} is answered twice")
        seen.add(answer.id)
        checked.append(_answer(by_id[answer.id], answer))
    unanswered = [rid for rid in by_id if rid not in seen]
    if unanswered:
        raise invalid(f"unanswered requirement(s): {', '.join(unanswered)}")
    return checked


def received_payload(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The event that records the answers in the job's log (a late reader sees them)."""
    return {"type": "input_received", "answers": answers}


@accepts_stream_token
async def continue_job(request: Request) -> Response:
    job_id = params.job_id(request)
    body = parse_continue(await request.body())
    state = request.app.state
    try:
        job = await jobs.continue_job(
            state.pool, job_id, resolve_tenant(request), lambda reqs: check_answers(body, reqs), received_payload
        )
    except jobs.NotPaused as exc:
        raise ApiError(409, "not_paused", f"job is {exc.status}; only a paused job can be continued") from None
    if job is None:
        raise not_found()
    # Committed first: a dispatch that fails loses nothing (the reaper sends the pending job).
    dispatched = await state.dispatcher.dispatch(job_id)
    log.info("job continued", extra=job_fields(job_id, Status.PENDING, dispatched=dispatched))
    return Job.model_validate(job).response(status_code=202)
