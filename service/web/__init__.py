"""HTTP only: the Litestar app factory, routes, schemas, OpenAPI document, error bodies and middleware."""

from .app import create_app

__all__ = ["create_app"]
