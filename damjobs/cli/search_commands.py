"""The rebuild-index job command and the `index` admin commands (status, rollback)."""

import json
import logging
from typing import Annotated, Any

import typer

from damjobs import db
from damjobs.cli import app, boundary, load_settings, open_database, set_json
from damjobs.cli.jobs import (
    DryRun,
    JsonSummary,
    MaxRuntime,
    Trigger,
    run_registered_job,
)
from damjobs.db import models
from damjobs.errors import JobAlreadyRunningError
from damjobs.exit_codes import ExitCode
from damjobs.jobs import rebuild_index
from damjobs.search import client as search_client
from damjobs.search.admin import IndexAdmin

logger = logging.getLogger("damjobs.cli")

index_app = typer.Typer(
    help="Inspect the search index behind the alias and roll it back.",
    no_args_is_help=True,
)
app.add_typer(index_app, name="index")

JsonOutput = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@app.command("rebuild-index")
@boundary
def rebuild_index_command(
    dry_run: DryRun = False,
    max_runtime: MaxRuntime = None,
    json_output: JsonSummary = False,
    trigger: Trigger = "manual",
) -> int:
    """
    Rebuild the search index from the database, then swap the alias to it.

    The new index is built beside the one in use, so searches keep working. The alias
    moves in one atomic update once the new index is complete and its document count is
    verified. Run it by hand, for example after a mapping change or a lost index.

    Example: damjobs rebuild-index --dry-run, then damjobs rebuild-index
    """
    return run_registered_job(
        "rebuild-index",
        rebuild_index.Options(),
        dry_run,
        max_runtime,
        json_output,
        trigger,
    )


def _admin() -> IndexAdmin:
    settings = load_settings()

    return IndexAdmin(search_client.make_client(settings), settings["index.alias"])


def _format_status(status: dict[str, Any]) -> list[str]:
    targets = ", ".join(status["targets"]) or "no index"
    lines = [f"alias {status['alias']} -> {targets}"]
    for index in status["indices"]:
        marker = "*" if index["behind_alias"] else " "
        documents = index.get("documents")
        size = index.get("size_bytes")
        state = index["state"] + (" (closed)" if index.get("closed") else "")
        lines.append(
            f"{marker} {index['name']}  {state}"
            f"  documents={documents if documents is not None else '?'}"
            f"  size={size if size is not None else '?'} B"
            f"  health={index.get('health') or '?'}"
            f"  created={index.get('created') or '?'}"
        )
    if len(lines) == 1:
        lines.append("  no indices; run `damjobs rebuild-index` to create one")

    return lines


@index_app.command("status")
@boundary
def status_command(json_output: JsonOutput = False) -> int:
    """
    Show which index the alias points at and every index a rebuild created for it.

    States: complete (kept for rollback or in use), loading (a rebuild in progress or a
    leftover of a failed one, which the next rebuild deletes).
    """
    set_json(json_output)
    status = _admin().status()
    if json_output:
        print(json.dumps(status, sort_keys=True))
    else:
        print("\n".join(_format_status(status)))

    return ExitCode.SUCCEEDED


@index_app.command("rollback")
@boundary
def rollback_command(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Index to point the alias at; default: the newest complete index older "
            "than the current one.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOutput = False,
) -> int:
    """
    Point the alias back at the previous complete index in one atomic update.

    The index it pointed at is kept, so a later `rollback --to NAME` can return to it;
    the next rebuild deletes it if it falls beyond index.keep_old_indices.
    """
    set_json(json_output)
    settings = load_settings()
    open_database(settings)  # binds the models for the job slot query
    with db.translated_errors("reading the rebuild-index job slot"):
        slot = models.JobSlot.get_or_none(models.JobSlot.job == "rebuild-index")
    if slot is not None and slot.state == "running":
        raise JobAlreadyRunningError(
            f"rebuild-index is running (run {slot.status_id} on host {slot.host}); "
            "its swap would undo the rollback, so wait for it to end"
        )
    admin = IndexAdmin(search_client.make_client(settings), settings["index.alias"])
    previous, target = admin.rollback(to)
    if json_output:
        print(
            json.dumps(
                {"alias": admin.alias, "previous": list(previous), "index": target}
            )
        )
    else:
        print(
            f"alias {admin.alias} now points at {target} (was {', '.join(previous) or 'none'})"
        )

    return ExitCode.SUCCEEDED
