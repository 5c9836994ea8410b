"""``bdi keys ...``: the API keys of the service (roles inspector < setup < engineer < admin). A key is printed
once, when it is made; the registry keeps only its sha256. Keys added or revoked take effect on every host of the
registry within a few seconds, without a restart."""

from __future__ import annotations

from pathlib import Path

import click

from ..storage.keys import ROLES
from .common import cli_audit, echo_json, json_option, models_dir_option, open_models, print_table, rich_console


@click.group()
def keys() -> None:
    """API keys with roles: add, list, revoke."""


@keys.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the key may do; each role includes the "
              "ones before it.")
@models_dir_option
@json_option
def add_key(name: str, role: str, models_dir: Path | None, as_json: bool) -> None:
    """Make a key named NAME (e.g. cell-3-gui) and print it once: store it where the client reads it."""
    opened = open_models(models_dir)
    token = opened.registry.keys.add(name, role, cli_audit("key_add"))
    if as_json:
        echo_json({"name": name, "role": role, "key": token})
        return
    click.echo(token)
    rich_console(stderr=True).print(f"Key {name!r} ({role}) added; it is shown only this once. Clients send it as "
                                    "the X-API-Key header (or Authorization: Bearer).")


@keys.command("list")
@models_dir_option
@json_option
def list_keys(models_dir: Path | None, as_json: bool) -> None:
    """Every key, revoked ones included (never the key itself)."""
    opened = open_models(models_dir)
    found = opened.registry.keys.list()
    if as_json:
        echo_json([{"name": k.name, "role": k.role, "created_at": k.created_at, "created_by": k.created_by,
                    "revoked_at": k.revoked_at} for k in found])
        return
    if not found:
        rich_console().print("No API keys: the service is open unless BDI_API_KEY is set.")
        return
    print_table(None, ("name", "role", "created", "by", "revoked"),
                ((k.name, k.role, k.created_at, k.created_by, k.revoked_at) for k in found))


@keys.command("revoke")
@click.argument("name")
@models_dir_option
def revoke_key(name: str, models_dir: Path | None) -> None:
    """Revoke the key NAME: every host refuses it within a few seconds. Its name stays in the audit trail."""
    opened = open_models(models_dir)
    opened.registry.keys.revoke(name, cli_audit("key_revoke"))
    rich_console(stderr=True).print(f"Key {name!r} revoked.")
