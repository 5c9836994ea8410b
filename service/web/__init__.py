"""HTTP only: the Litestar app factory, the OpenAPI document, error bodies and middleware, and one subpackage per
domain, each a Litestar ``Controller`` (``controller.py``) with its request and response bodies beside it
(``schemas.py``) and its own OpenAPI tag:

- ``inspection``: the contract's inspection API both GUIs use (/health, /fit_ok, /calibrate_ng, /infer, /state);
- ``datasets``: the newer GUI's samples and /calibrate_dataset;
- ``records``: the inspection records (/inspections...);
- ``monitoring``: the Prometheus metrics (/metrics).

What several domains use (request helpers, the recipe rule, id and recipe types, the error body) is in ``shared``.
A new domain (reviews, versions, jobs, audit, keys, console, ...) gets its own subpackage the same way: a Controller
added in ``app.create_app``, a tag in ``openapi.TAGS`` and, with schemas, its module in ``openapi.SCHEMA_MODULES``.
"""

from .app import create_app

__all__ = ["create_app"]
