"""``peershop token create`` and ``peershop user password|pin`` (registered in
hub/cli/commands.py)."""

from __future__ import annotations

import click
from sqlalchemy import select

from hub.cli.context import Context, database
from hub.rules.access import Role
from hub.store.models import Member
from web.auth import ROLES, SecretRuleError, create_token, set_password, set_pin


def _sm(ctx: click.Context):
    return database(ctx.find_object(Context))


@click.group("token")
def token_group() -> None:
    """API tokens for scripts (sent as ``Authorization: Bearer TOKEN``)."""


@token_group.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the token may read.")
@click.option("--name", required=True, help="What the token is for (shown in Admin).")
@click.option("--member", "handle", help="Whose records a member or trainer token reads.")
@click.pass_context
def token_create(ctx: click.Context, role: str, name: str, handle: str | None) -> None:
    """Print a new API token once; only its hash is stored."""
    if role != Role.COORDINATOR and handle is None:
        raise click.UsageError("a member or trainer token needs --member HANDLE")
    engine, sm = _sm(ctx)
    try:
        with sm.begin() as session:
            if (
                handle is not None
                and session.scalar(select(Member.id).where(Member.handle == handle)) is None
            ):
                raise click.ClickException(f"no member with handle {handle!r}")
            token = create_token(session, name, role, handle)
    finally:
        engine.dispose()
    click.echo(token)
    click.echo("shown once: keep it now; revoke it in Admin > API tokens", err=True)


@click.group("user")
def user_group() -> None:
    """Web logins: set a member's password (e.g. the first coordinator's) or kiosk PIN."""


def _set_secret(ctx: click.Context, handle: str, secret: str, kind: str) -> None:
    engine, sm = _sm(ctx)
    try:
        with sm.begin() as session:
            member = session.scalar(select(Member).where(Member.handle == handle))
            if member is None:
                raise click.ClickException(
                    f"no member with handle {handle!r} (add them with `peershop load`)"
                )
            try:
                ended = (set_pin if kind == "pin" else set_password)(session, member, secret)
            except SecretRuleError as exc:
                raise click.ClickException(str(exc)) from None
    finally:
        engine.dispose()
    click.echo(f"{kind} of {handle} set; their web logins ({ended}) ended")


@user_group.command("password")
@click.argument("handle")
@click.password_option("--password", prompt="New password", help="Asked for when not given.")
@click.pass_context
def user_password(ctx: click.Context, handle: str, password: str) -> None:
    """Set HANDLE's web password (asked twice, not echoed; 8 to 200 characters)."""
    _set_secret(ctx, handle, password, "password")


@user_group.command("pin")
@click.argument("handle")
@click.password_option("--pin", prompt="New PIN", help="Asked for when not given.")
@click.pass_context
def user_pin(ctx: click.Context, handle: str, pin: str) -> None:
    """Set HANDLE's kiosk PIN (6 to 12 digits), used with their badge at a kiosk."""
    _set_secret(ctx, handle, pin, "pin")
