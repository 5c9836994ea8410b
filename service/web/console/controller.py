"""The quality engineer's console: server-rendered pages over the same core calls as the API's routes (records,
overview, one model, the review queue), the kept images served with caching headers, and forms that review,
learn, replay, shadow and activate through the very core functions the API's routes call (so the same audit rows,
with the logged-in key's name as actor). Not in the OpenAPI document (pages, not API).

Once keys exist, a browser logs in with a key (``/console/login``) and carries a signed session cookie
(``session.py``); a request without one is sent to the login page. Every form carries the session's CSRF token,
except that a request authenticated by its own X-API-Key header needs none (a browser can't forge that header)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import Parameter
from litestar.response import Redirect, Template

from ...core import InspectionService
from ...core.review import verdict_problem
from ...errors import BadRequest, ServiceError
from ...storage import MOMENT_FORMS, RecordFilter, parse_moment
from ...storage.keys import hash_key
from ...storage.reviews import OUTCOMES
from ..auth import ANYONE, ENGINEER, caller, presented_key
from ..shared import off_loop, request_context
from .overlay import anchored, model_scale, overlay_png, thumbnail_png
from .plots import score_histogram_svg, scores_over_time_svg
from .session import SESSION, ConsoleSession, cookie, new_session, secret_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
PAGE_SIZE = 50
IMMUTABLE = "private, max-age=31536000, immutable"
"""A record's kept image never changes (its sha256 is in the record), nor what is drawn from it."""
REPLAY_REFRESH_S = 2
"""How often a replay's page reloads itself while the job runs."""
CSRF_FAILED = ("This form is stale or did not come from the console (its CSRF token does not match this browser's "
               "session); reload the page and submit it again.")
DONE = {
    "learned": "Learned from the reviews: version {} is staged (replay it, shadow it or activate it below).",
    "activated": "Version {} is active now.",
    "shadow": "Version {} scores the live traffic in shadow now.",
    "unshadowed": "Shadowing stopped.",
}
"""What the model page says after an action (the redirect after the form names the action and the version)."""

Query = Annotated[str | None, Parameter(required=False)]
RecordId = Annotated[str, Parameter()]
JobId = Annotated[str, Parameter()]
ModelPart = Annotated[str, Parameter()]


def model_href(recipe_id: str, role_id: str, roi_id: str, **more: Any) -> str:
    """The console's address of one model: its ids as query parameters (any character a role id holds, '/'
    included, travels safely)."""
    return "/console/model?" + urlencode({"recipe": recipe_id, "role": role_id, "roi": roi_id, **more})


def _safe_next(target: str | None, fallback: str) -> str:
    """Where to go after a form: a console address only (never another site's)."""
    if target and target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


def _page(request: Request[Any, Any, Any], name: str, context: dict[str, Any], status_code: int = 200) -> Template:
    """A page with what every page shows: who is logged in, and the CSRF token its forms carry."""
    session = request.scope.get("state", {}).get(SESSION) or {}
    return Template(name, context={**context, "who": caller(request), "csrf": session.get("csrf", ""),
                                   "logged_in": bool(session.get("key"))}, status_code=status_code)


def _error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A failed page or action: the service's sentence (or the router's), its status, and a way back; a request
    that needs a key goes to the login page instead."""
    status = getattr(exc, "status_code", 500)
    if status == 401:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "") \
            if request.method == "GET" else "/console/"
        return Redirect(f"/console/login?{urlencode({'next': back})}", status_code=303)
    sentence = exc.message if isinstance(exc, ServiceError) else getattr(exc, "detail", "") or str(exc)
    return _page(request, "error.html.j2", {"status": status, "sentence": sentence}, status)


def _moment(name: str, text: str | None) -> Any:
    if not text:
        return None
    try:
        return parse_moment(text)
    except ValueError:
        raise BadRequest(f"{name} must be {MOMENT_FORMS}; got {text[:64]!r}.") from None


def _cached(data: bytes, media_type: str, request: Request[Any, Any, Any]) -> Response[bytes]:
    """Bytes that never change for their address, with an ETag (a 304 when the browser has them)."""
    etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
    headers = {"Cache-Control": IMMUTABLE, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    """The form's text fields, its CSRF token checked against the session's (403 with a sentence) unless the
    request was authenticated by its own API key header."""
    form = await request.form()
    fields = {name: value for name, value in form.items() if isinstance(value, str)}
    if presented_key(request) and caller(request) is not None:
        return fields
    expected = (request.scope.get("state", {}).get(SESSION) or {}).get("csrf", "")
    if not expected or not hmac.compare_digest(fields.get("csrf", "").encode("utf-8"), expected.encode("utf-8")):
        raise ServiceError(CSRF_FAILED, 403)
    return fields


def _model_ids(fields: dict[str, str]) -> tuple[str, str, str]:
    """recipe, role and ROI of a model form (400 with a sentence when role or ROI is missing)."""
    missing = [name for name in ("role", "roi") if not fields.get(name)]
    if missing:
        raise BadRequest(f"The form has no {' and no '.join(missing)}; open the action from the model's page.")
    return fields.get("recipe") or "default", fields["role"], fields["roi"]


def _version(text: str | None, what: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise BadRequest(f"{what} needs a version number, got {(text or '')[:20]!r}.") from None


def _session_cookie(request: Request[Any, Any, Any], key_sha256: str | None) -> Cookie:
    """A new session (a new CSRF token too) for the key with this hash, None: logged out."""
    return cookie(new_session(key_sha256), secret_of(request.scope), request.url.scheme == "https")


class ConsoleController(Controller):
    """Pages of the console under /console/. Each page declares its role: the quality engineer's, but the login
    and logout pages, which anyone reaches."""

    path = "/console"
    include_in_schema = False
    middleware = [ConsoleSession]
    exception_handlers = {ServiceError: _error_page, HTTPException: _error_page}

    # ---- login ------------------------------------------------------------------------------------------------
    @get("/login", name="console_login", guards=[ANYONE])
    async def login_form(self, request: Request[Any, Any, Any], next: Query = None) -> Template:
        keyed = bool(request.app.state.settings.api_key) or bool(
            await off_loop(request.app.state.service.registry.keys.active))
        return _page(request, "login.html.j2", {"next": _safe_next(next, "/console/"), "keyed": keyed,
                                                "sentence": None})

    @post("/login", name="console_login_submit", guards=[ANYONE], status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """A key typed into the login form opens a session holding its hash; an unknown key is a 401 page.
        (The login form carries no CSRF token: before logging in there is no session to protect.)"""
        form = await request.form()
        key = str(form.get("key") or "").strip()
        target = _safe_next(str(form.get("next") or ""), "/console/")
        if not key:
            return _page(request, "login.html.j2", {"next": target, "keyed": True,
                                                    "sentence": "Type an API key to log in."})
        env_key: str = request.app.state.settings.api_key
        known = bool(env_key) and hmac.compare_digest(key.encode("utf-8"), env_key.encode("utf-8"))
        if not known:
            known = await off_loop(request.app.state.service.registry.keys.identify, key) is not None
        if not known:
            return _page(request, "login.html.j2", {
                "next": target, "keyed": True,
                "sentence": "This key is not known to this service or was revoked; ask an administrator for a key "
                            "(`bdi keys add NAME --role engineer`)."}, 401)
        return Redirect(target, status_code=303, cookies=[_session_cookie(request, hash_key(key))])

    @post("/logout", name="console_logout", guards=[ANYONE], status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Forget the key: the browser gets a session without one (and a new CSRF token)."""
        return Redirect("/console/login", status_code=303, cookies=[_session_cookie(request, None)])

    # ---- pages ------------------------------------------------------------------------------------------------
    @get("/", name="console_overview", guards=[ENGINEER])
    async def overview(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> Template:
        models = await off_loop(service.overview)
        for model in models:
            model["href"] = model_href(model["recipe_id"], model["role_id"], model["roi_id"])
            model["queue_href"] = "/console/review?" + urlencode(
                {"recipe": model["recipe_id"], "role": model["role_id"], "roi": model["roi_id"]})
        return _page(request, "overview.html.j2", {"models": models})

    @get("/inspections", name="console_inspections", guards=[ENGINEER])
    async def inspections(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[InspectionService],
        recipe: Query = None,
        role: Query = None,
        roi: Query = None,
        decision: Annotated[Literal["ok", "ng", "none", ""] | None, Parameter(required=False)] = None,
        review: Annotated[Literal["pending", "reviewed", ""] | None, Parameter(required=False)] = None,
        outcome: Query = None,
        part: Query = None,
        since: Query = None,
        until: Query = None,
        cursor: Query = None,
    ) -> Template:
        given = {"recipe": recipe, "role": role, "roi": roi, "decision": decision, "review": review,
                 "outcome": outcome, "part": part, "since": since, "until": until}
        if outcome and outcome not in OUTCOMES:
            raise BadRequest(f"outcome must be one of {', '.join(OUTCOMES)}; got {outcome[:40]!r}.")
        where = RecordFilter(recipe_id=recipe or None, role_id=role or None, roi_id=roi or None,
                             decision=decision or None, part_id=part or None, since=_moment("since", since),
                             until=_moment("until", until), review=review or None, outcome=outcome or None)
        page = await off_loop(service.inspections, where, PAGE_SIZE, cursor or None)
        query = {key: value for key, value in given.items() if value}
        next_href = f"/console/inspections?{urlencode({**query, 'cursor': page['next_cursor']})}" \
            if page["next_cursor"] else None
        return _page(request, "inspections.html.j2", {
            "items": page["items"], "filters": given, "outcomes": OUTCOMES, "next_href": next_href,
            "first_href": f"/console/inspections?{urlencode(query)}" if cursor else None})

    @get("/inspections/{inspection_id:str}", name="console_inspection", guards=[ENGINEER])
    async def inspection(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
                         inspection_id: RecordId) -> Template:
        record = await off_loop(service.inspection, inspection_id)
        return _page(request, "inspection.html.j2", self._record_context(record, request.url.path))

    @staticmethod
    def _record_context(record: Any, back: str) -> dict[str, Any]:
        """What a page showing one record (its page, the review queue) needs."""
        return {"r": record.as_dict(), "record": record,
                "scale": model_scale(record.threshold) if anchored(record) else None,
                "model_href": model_href(record.recipe_id, record.role_id, record.roi_id),
                "regions": record.regions or [], "review_next": back}

    @post("/inspections/{inspection_id:str}/review", name="console_review_submit", guards=[ENGINEER],
          status_code=303)
    async def review_inspection(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
                                inspection_id: RecordId) -> Response[Any]:
        """The OK/NG buttons: the same core call as POST /inspections/{id}/review, then back where the form says
        (the inspection's page, or the review queue, which shows the next record)."""
        fields = await _form(request)
        verdict = fields.get("verdict", "")
        problem = verdict_problem(verdict)
        if problem is not None:
            raise ServiceError(f"verdict {problem}.", 422)
        await off_loop(service.review, inspection_id, verdict, fields.get("note") or None, None,
                       request_context(request))
        return Redirect(_safe_next(fields.get("next"), f"/console/inspections/{inspection_id}"), status_code=303)

    @get("/inspections/{inspection_id:str}/image", name="console_image", guards=[ENGINEER])
    async def image(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                    inspection_id: RecordId) -> Response[bytes]:
        data, media_type = await off_loop(service.inspection_file, inspection_id, "image")
        return _cached(data, media_type, request)

    @get("/inspections/{inspection_id:str}/thumb.png", name="console_thumbnail", guards=[ENGINEER])
    async def thumbnail(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                        inspection_id: RecordId) -> Response[bytes]:
        data, _ = await off_loop(service.inspection_file, inspection_id, "image")
        return _cached(await off_loop(thumbnail_png, data), "image/png", request)

    @get("/inspections/{inspection_id:str}/overlay.png", name="console_overlay", guards=[ENGINEER])
    async def overlay(self, service: NamedDependency[InspectionService], request: Request[Any, Any, Any],
                      inspection_id: RecordId) -> Response[bytes]:
        record = await off_loop(service.inspection, inspection_id)
        image, _ = await off_loop(service.inspection_file, inspection_id, "image")
        heatmap, _ = await off_loop(service.inspection_file, inspection_id, "heatmap")
        return _cached(await off_loop(overlay_png, record, image, heatmap), "image/png", request)

    @get("/review", name="console_review", guards=[ENGINEER])
    async def review_queue(
        self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService], recipe: Query = None,
        role: Query = None, roi: Query = None, cursor: Query = None,
    ) -> Template:
        """The review queue one record at a time, the most informative first; reviewing it shows the next one
        (it leaves the queue), ``skip`` moves past it."""
        where = RecordFilter(recipe_id=recipe or None, role_id=role or None, roi_id=roi or None)
        page = await off_loop(service.review_queue, where, 1, cursor or None)
        filters = {key: value for key, value in {"recipe": recipe, "role": role, "roi": roi}.items() if value}
        here = "/console/review" + (f"?{urlencode({**filters, **({'cursor': cursor} if cursor else {})})}"
                                    if filters or cursor else "")
        context: dict[str, Any] = {"filters": filters, "item": None, "skip_href": None}
        if page["items"]:
            record = await off_loop(service.inspection, page["items"][0]["id"])
            context.update(self._record_context(record, here), item=page["items"][0])
            if page["next_cursor"]:
                context["skip_href"] = "/console/review?" + urlencode({**filters, "cursor": page["next_cursor"]})
        return _page(request, "review.html.j2", context)

    @get("/model", name="console_model", guards=[ENGINEER])
    async def model(
        self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService], role: ModelPart, roi: ModelPart,
        recipe: Query = None, done: Query = None, version: Query = None,
    ) -> Template:
        recipe = recipe or "default"
        found = await off_loop(service.model_overview, role, roi, recipe_id=recipe)
        versions = (await off_loop(service.versions, role, roi, recipe_id=recipe))["items"]
        shadow = await off_loop(service.shadow, role, roi, recipe_id=recipe)
        series = found["series"]
        plots = {
            "calibrations": [score_histogram_svg(entry["ok_scores"], entry["ng_scores"], entry.get("threshold"))
                             for entry in found["calibrations"][:3]],
            "drift": scores_over_time_svg(series.times, series.scores, series.decisions, series.threshold)
            if series is not None else "",
        }
        message = DONE[done].format(version) if done in DONE else None
        return _page(request, "model.html.j2", {
            **found, "plots": plots, "version_items": versions, "shadow": shadow, "message": message,
            "ids": {"recipe": recipe, "role": role, "roi": roi},
            "inspections_href": "/console/inspections?" + urlencode({"recipe": recipe, "role": role, "roi": roi}),
        })

    # ---- model actions: the same core calls as the routes, with the session's actor -----------------------------
    @post("/model/learn", name="console_learn", guards=[ENGINEER], status_code=303)
    async def learn(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> Redirect:
        recipe, role, roi = _model_ids(await _form(request))
        answer = await off_loop(service.learn, role, roi, False, request_context(request), recipe_id=recipe)
        return Redirect(model_href(recipe, role, roi, done="learned", version=answer["version"]), status_code=303)

    @post("/model/activate", name="console_activate", guards=[ENGINEER], status_code=303)
    async def activate(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> Redirect:
        """Activate a staged version, or roll back to a retired one (the same call)."""
        fields = await _form(request)
        recipe, role, roi = _model_ids(fields)
        version = _version(fields.get("version"), "Activate")
        await off_loop(service.activate, role, roi, version, request_context(request), recipe_id=recipe)
        return Redirect(model_href(recipe, role, roi, done="activated", version=version), status_code=303)

    @post("/model/shadow", name="console_shadow", guards=[ENGINEER], status_code=303)
    async def shadow(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> Redirect:
        """Start shadowing a version, or stop (an empty version)."""
        fields = await _form(request)
        recipe, role, roi = _model_ids(fields)
        version = _version(fields["version"], "Shadow") if fields.get("version") else None
        await off_loop(service.set_shadow, role, roi, version, request_context(request), recipe_id=recipe)
        done = {"done": "shadow", "version": version} if version is not None else {"done": "unshadowed"}
        return Redirect(model_href(recipe, role, roi, **done), status_code=303)

    @post("/model/replay", name="console_replay", guards=[ENGINEER], status_code=303)
    async def replay(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService]) -> Redirect:
        """Start a replay job and follow it on its page."""
        fields = await _form(request)
        recipe, role, roi = _model_ids(fields)
        version = _version(fields.get("version"), "Replay")
        last = fields.get("last") or "500"
        if not last.isdigit():
            raise BadRequest(f"last must be a whole number of records, got {last[:20]!r}.")
        answer = await off_loop(service.replay, role, roi, version, int(last), request_context(request),
                                recipe_id=recipe)
        return Redirect(f"/console/jobs/{answer['job_id']}", status_code=303)

    @get("/jobs/{job_id:str}", name="console_job", guards=[ENGINEER])
    async def job(self, request: Request[Any, Any, Any], service: NamedDependency[InspectionService],
                  job_id: JobId) -> Template:
        """A replay's progress (the page reloads itself while it runs) and, when done, what would change."""
        job = await off_loop(service.job, job_id)
        result = job.result or {}
        flips = [item for item in result.get("items", []) if item["old_decision"] != item["new_decision"]]
        return _page(request, "job.html.j2", {
            "job": job, "result": result, "flips": flips, "running": job.status in ("queued", "running"),
            "refresh_s": REPLAY_REFRESH_S, "model_href": model_href(job.recipe_id, job.role_id, job.roi_id),
            "ids": {"recipe": job.recipe_id, "role": job.role_id, "roi": job.roi_id},
        })

