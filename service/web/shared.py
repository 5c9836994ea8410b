"""What every domain of the HTTP layer shares: the request helpers (work off the event loop, the request's
context, the recipe rule, the multipart form check), the parameter and field types of the ids and the recipe, the
error sentences several routes document, and the error body (``ErrorResponse``).

The recipe of a request is its ``recipe_id`` field (form, query or JSON body) when given and not blank, else its
``X-Recipe-Id`` header, else none (the default namespace); ``validation.normalize_recipe`` checks it.

Field order of the Structs is the order of the JSON keys on the wire. The ``Meta`` descriptions and examples, the
docstrings and the ``example`` class variables are what the OpenAPI document shows (see ``web.openapi``); they never
change validation.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Awaitable
from typing import Annotated, Any, Callable, ClassVar, TypeVar

import anyio.to_thread
import msgspec
from litestar import Request
from litestar.datastructures import FormMultiDict, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import ClientException, ValidationException
from litestar.params import HeaderParameter, Parameter
from msgspec import Meta
from multipart import ParserLimitReached

from ..core import RequestContext
from ..errors import BadRequest, PayloadTooLarge
from ..logs import correlation_id
from ..validation import MAX_ID_LENGTH, MAX_MM_PER_PX, RECIPE_PATTERN, normalize_recipe
from .auth import caller

# Constraints for the document only: Litestar copies a Meta's ``extra_json_schema["extra"]`` into the field's
# schema and msgspec validates none of it, so the service's own checks, with the contract's 400s, stay the rule.
_CONTROL = "\\u0000-\\u001F\\u007F-\\u009F\\u2028\\u2029"
_SPACE = " \\u00A0\\u1680\\u2000-\\u200A\\u202F\\u205F\\u3000"
ID_SCHEMA = {
    "minLength": 1,
    "maxLength": MAX_ID_LENGTH,
    "pattern": f"^[^{_CONTROL}]*[^{_SPACE}{_CONTROL}][^{_CONTROL}]*$",
}
"""What an id must be (``validation.validate_id``: not blank after ``str.strip``, no control, line or paragraph
separator), for the document only: a violation is the contract's 400, not the 422 a validating Meta would give.
The spaces listed are the characters ``str.isspace`` knows besides those; surrogates can't arrive in UTF-8."""
MM_PER_PX_SCHEMA = {"maximum": MAX_MM_PER_PX}  # no lower bound: OpenAPI 3.0 has no numeric exclusiveMinimum

RoleId = Annotated[
    str,
    Meta(
        description="Role of the model, e.g. `Master1`. Free text: 1 to 128 printable characters, not blank, "
        "case-sensitive (`Master1` and `master1` are two models).",
        examples=["Master1"],
        extra_json_schema={"extra": ID_SCHEMA},
    ),
]
RoiId = Annotated[
    str,
    Meta(description="ROI within the role, e.g. `inspection-1`. Same rules as `role_id`.", examples=["inspection-1"],
         extra_json_schema={"extra": ID_SCHEMA}),
]

MODEL_KEY_DESCRIPTION = "Accepted and ignored (newer GUIs send it, equal to `roi_id`)."
RecipeIdField = Annotated[
    str,
    Meta(
        description="The recipe (namespace of models and datasets, one per product variant). Beats the "
        "`X-Recipe-Id` header; both absent or blank: the default namespace, the models old GUIs use. Normalised "
        f"by `strip().lower()`, then it must match `{RECIPE_PATTERN}` and not be `last`, else 400.",
        examples=["line2-disc"],
    ),
]


class Decision(enum.Enum):
    """`ng` when score >= threshold, else `ok`."""

    OK = "ok"
    NG = "ng"


class ValidationDetail(msgspec.Struct):
    """One field problem, as FastAPI reports it."""

    example: ClassVar[dict[str, Any]] = {"loc": ["body", "mm_per_px"], "msg": "Expected `float`, got `str`",
                                         "type": "value_error"}

    loc: Annotated[list[str | int], Meta(description="Where: the source (`body`, `query`), then the field path.")]
    msg: str
    type: Annotated[str, Meta(description="`missing` for an absent field, else `value_error`.")]


class ErrorResponse(msgspec.Struct):
    """Every error body (4xx and 5xx)."""

    example: ClassVar[dict[str, Any]] = {
        "error": "Memory not fitted for role_id='Master1', roi_id='inspection-1'. "
        "Memoria no encontrada. Ejecuta /fit_ok primero.",
        "detail": "Memory not fitted for role_id='Master1', roi_id='inspection-1'. "
        "Memoria no encontrada. Ejecuta /fit_ok primero.",
    }

    error: Annotated[str, Meta(description="A sentence saying what went wrong and what to do.")]
    detail: Annotated[
        str | list[ValidationDetail],
        Meta(description="On 422 the list of field problems (FastAPI's `{loc, msg, type}`); otherwise the same "
             "sentence as `error` (on 500, the exception's repr). The GUI reads `detail` first."),
    ]
    trace: Annotated[str, Meta(description="Only on 5xx (unless BDI_ERROR_TRACE=0): the server's traceback.")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


# ---- request helpers --------------------------------------------------------------------------------------------
T = TypeVar("T")


async def off_loop(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """CPU and disk work runs in a worker thread (the context, so the correlation id, goes along)."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


def request_context(request: Request[Any, Any, Any]) -> RequestContext:
    """Who asked (the correlation id, the client's address, the API key's name and role), for the service's logs,
    records and audit trail."""
    client = f"{request.client.host}:{request.client.port}" if request.client else None
    identity = caller(request)
    return RequestContext(correlation_id=correlation_id.get(), client=client, source="api",
                          actor=identity.name if identity else None, role=identity.role if identity else None)


def as_schema(schema: type[T], value: dict[str, Any]) -> T:
    """The service's answer as the route's response Struct (its field order is the order on the wire)."""
    return msgspec.convert(value, schema)


RecipeHeader = Annotated[
    str | None,
    HeaderParameter(name="X-Recipe-Id", description="The recipe (the newer GUI's layout name, sent verbatim): a namespace "
              "of models and samples. A `recipe_id` field or query beats it; both absent or blank: the default "
              "namespace, the models old GUIs use. `strip().lower()` must match `[a-z0-9][a-z0-9_-]{0,63}` and not be "
              "`last`, else 400 (/health: 200 with `recipe_error`)."),
]


def recipe_of(given: Any, header: str | None) -> str:
    """The request's recipe, checked (400 with the contract's sentence): ``recipe_id`` when given and not blank,
    else the X-Recipe-Id header, else the default namespace."""
    return normalize_recipe(given if isinstance(given, str) and given.strip() else header)



async def read_form(request: Request[Any, Any, Any]) -> FormMultiDict:
    """The multipart form, parsed here rather than by Litestar's body extraction, whose parser failures would
    reach the client as a 500 (a text part that is not UTF-8, such as a file part without a file name) or as a
    400 that says "Request Entity Too Large" (too many parts)."""
    content_type, _ = request.content_type
    if content_type != RequestEncodingType.MULTI_PART:
        raise BadRequest(
            f"The body must be multipart/form-data (text fields and file parts), not {content_type or 'untyped'}; "
            "send the form as multipart/form-data."
        )
    try:
        return await request.form()
    except UnicodeDecodeError:
        raise BadRequest(
            "A text field of the form is not UTF-8 text, or a file part has no file name; send the image(s) as "
            'file parts with a file name (filename="roi.png") and the other fields as UTF-8 text.'
        ) from None
    except ClientException as exc:
        if exc.status_code == 413:  # the body is over BDI_MAX_BODY_MB: the app's 413 sentence
            raise
        limit = exc.__context__  # Litestar raises its own error "from None" over the parser's
        if isinstance(limit, ParserLimitReached) and "segment count" in str(limit):
            settings = request.app.state.settings
            raise PayloadTooLarge(
                f"The form has more than {request.app.multipart_form_part_limit} parts: at most "
                f"{settings.max_fit_images} images per request (BDI_MAX_FIT_IMAGES) and a few text fields; send "
                "fewer images or raise BDI_MAX_FIT_IMAGES."
            ) from None
        if isinstance(limit, ParserLimitReached):
            raise BadRequest(
                f"A part of the form has headers over the parser's limits ({limit}); keep file names short "
                "(well under 4 KB) and each part to a few headers."
            ) from None
        raise BadRequest(
            f"The multipart/form-data body can't be read ({str(exc.detail).rstrip('.')}); send text fields and "
            "file parts as the API document at /docs describes."
        ) from None


def form_check(
    schema: type[msgspec.Struct], file_field: str, many: bool, repeated: tuple[str, ...] = ()
) -> Callable[[Request[Any, Any, Any]], Awaitable[None]]:
    """A before_request hook for a multipart route: reads the form (see ``read_form``) and answers 422, naming
    the field, for a repeated field (other than those in ``repeated``), a text field sent as a file or the file(s)
    sent as text, which the body's type check would report only with type names (``Unsupported type: <class
    'list'>``)."""
    text_fields = [field.name for field in msgspec.structs.fields(schema) if field.name != file_field]

    async def check(request: Request[Any, Any, Any]) -> None:
        form = await read_form(request)
        problems = []
        files = form.getall(file_field, [])
        if not all(isinstance(value, UploadFile) for value in files):
            problems.append((file_field, 'must be a file part with a file name (filename="roi.png"), not a text field'))
        elif not many and len(files) > 1:
            problems.append((file_field, f"was sent {len(files)} times; send exactly one image"))
        for name in text_fields:
            values = form.getall(name, [])
            if any(isinstance(value, UploadFile) for value in values):
                problems.append((name, "must be a text field, not a file part"))
            elif len(values) > 1 and name not in repeated:
                problems.append((name, f"was sent {len(values)} times; send it once"))
        if problems:
            extra = [{"key": key, "message": message, "source": "body"} for key, message in problems]
            raise ValidationException("Invalid form fields", extra=extra)

    return check


# Sentences several routes' error responses share in the document.
IDS_400 = "`role_id` or `roi_id` is blank, longer than 128 characters or contains control characters."
RECIPE_400 = ("The recipe (`recipe_id`, else the `X-Recipe-Id` header) is invalid: `Invalid recipe_id 'My Layout'. "
              "Allowed: [a-z0-9][a-z0-9_-]{0,63}.`, or reserved (`last`).")
FORM_422 = ("A required field is missing or has the wrong type (`detail` lists them as `{loc, msg, type}`; a "
            "number written with a decimal comma, `0,2`, is one: `error` then says to use a dot); a text "
            "field is sent as a file part or more than once")
MM_PER_PX_409 = ("In a named recipe, `mm_per_px` differs from the recipe's locked value (the first one it saw) by "
                 "more than 1e-6 relative: `mm_per_px mismatch for recipe '<r>': expected <e>, got <g>`, then what to do (send "
                 "the locked value, or reset the lock with `bdi recipes set-mm-per-px <r> <g>`). Nothing is stored.")


RoleQuery = Annotated[str, Parameter(description="Role of the model, e.g. `Master1`.", schema_extra=ID_SCHEMA)]
RoiQuery = Annotated[str, Parameter(description="ROI within the role, e.g. `inspection-1`.", schema_extra=ID_SCHEMA)]
RecipeQuery = Annotated[
    str | None,
    Parameter(description="The recipe; beats the `X-Recipe-Id` header. Absent or blank: the header, else the "
              "default namespace. `strip().lower()` must match `[a-z0-9][a-z0-9_-]{0,63}` and not be `last`."),
]
