"""``peershop period``, ``peershop export`` and ``peershop simulate``: the accounting
commands over hub/ledger/ and hub/peerconomy/ (registered in hub/cli/commands.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from hub.cli.context import database
from hub.errors import ExportError, PeriodError, ScenarioError
from hub.ledger.closing import close_period, period_summary, recent_periods
from hub.ledger.export import FORMATS, collect, render
from hub.ledger.periods import current_period
from hub.peerconomy.scenario import format_report, load_scenario, run_scenario, to_json
from hub.store.models import Period


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO date and time") from None
    if at.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. 2026-11-30T00:00:00+01:00")
    return at


def _text_summary(s: dict[str, Any]) -> str:
    state = "closed " + s["closed_at"] if s["closed_at"] else "open"
    lines = [f"period {s['id']}: {s['start']} to {s['end']} ({state})"]
    for project, data in s["projects"].items():
        lines.append(f"  project {project}")
        lines.append("    member               credited   expected    balance    running")
        for m, v in data["members"].items():
            lines.append(
                f"    {m:<18} {v['credited']:>10.2f} {v['expected']:>10.2f} "
                f"{v['balance']:>+10.2f} {v['running']:>+10.2f}"
            )
        for r, v in data["resources"].items():
            cost = "-" if v["unit_cost"] is None else f"{v['unit_cost']:.4f}"
            lines.append(f"    resource {r}: {v['units']:.2f} units at {cost} each")
    for e in s["excluded"]:
        lines.append(f"  left out: effort {e['key']} by {e['member']} ({e['reason']})")
    return "\n".join(lines)


@click.group("period")
def period_group() -> None:
    """Accounting periods: close one, show the current and last ones."""


@period_group.command("close")
@click.option("--at", "at", help="Close at this ISO instant instead of now.")
@click.option("--force", is_flag=True, help="Close even a period younger than period.min_length.")
@click.pass_obj
def close_command(obj: Any, at: str | None, force: bool) -> None:
    """Close the current accounting period now (also runs on schedule)."""
    when = _parse_at(at)
    engine, sm = database(obj)
    try:
        with sm.begin() as session:
            try:
                closed = close_period(session, obj.config(), when, force=force)
            except PeriodError as exc:
                raise click.ClickException(str(exc)) from None
            for c in closed:
                click.echo(_text_summary(period_summary(session, session.get(Period, c.period_id))))
    finally:
        engine.dispose()


@period_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (numbers to 6 places).")
@click.pass_obj
def show_command(obj: Any, as_json: bool) -> None:
    """The current period and the last closed one: balances and unit costs."""
    engine, sm = database(obj)
    try:
        with sm.begin() as session:
            periods = recent_periods(session, datetime.now(UTC))
            summaries = [period_summary(session, p) for p in periods]
    finally:
        engine.dispose()
    if as_json:
        click.echo(json.dumps({"periods": summaries}, indent=2))
    elif not summaries:
        click.echo("no periods yet")
    else:
        click.echo("\n\n".join(_text_summary(s) for s in summaries))


def _instant(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date and time", param_hint=name
        ) from None
    if at.tzinfo is None:
        raise click.BadParameter("give a time zone, e.g. +01:00", param_hint=name)
    return at


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--period", "period_id", type=int, help="A period's id (peershop period show).")
@click.option("--since", help="Start of a range (ISO, with time zone).")
@click.option("--until", help="End of a range (ISO, with time zone), exclusive.")
@click.option("--out", "out", type=click.Path(dir_okay=False), help="Write here, not stdout.")
@click.pass_obj
def export_command(
    obj: Any,
    fmt: str,
    period_id: int | None,
    since: str | None,
    until: str | None,
    out: str | None,
) -> None:
    """All records of a period or range, for spreadsheets, audits or forking the project.

    Without --period or a range: the period running now.
    """
    if period_id is not None and (since or until):
        raise click.UsageError("give --period or --since/--until, not both")
    engine, sm = database(obj)
    try:
        with sm() as session:
            if period_id is None and since is None and until is None:
                now = current_period(session, datetime.now(UTC))
                if now is None:
                    raise ExportError("no period is running; give --period or a range")
                period_id = now.id
            data = collect(
                session,
                period_id=period_id,
                since=_instant(since, "--since"),
                until=_instant(until, "--until"),
            )
    finally:
        engine.dispose()
    text = render(data, fmt)
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        with open(out, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        click.echo(
            f"wrote {len(data['effort'])} effort, {len(data['use'])} use, "
            f"{len(data['consume'])} consume records to {out}",
            err=True,
        )


@click.command("simulate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object (docs/scenario-format.md)."
)
def simulate_command(file: Path, as_json: bool) -> None:
    """Run the peerconomy rules on a scenario FILE (no database or broker needed)."""
    try:
        result = run_scenario(load_scenario(file))
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(to_json(result)))
    else:
        click.echo(format_report(result))
