r"""``hflite backup``, ``hflite restore`` and ``hflite mlflow-ui``: the ops kit's commands.

Plain functions; ``hflite.cli`` registers them as top-level commands (``app.command("backup")(backup)``,
``app.command("restore")(restore)``, ``app.command("mlflow-ui")(mlflow_ui)``).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from hflite.cli_errors import fail

if TYPE_CHECKING:
    from hflite.config import Settings

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="TOML config file: its data.dir, report.dir, runtime.log_dir, ai.registry_dir and llm.journal "
        "say what to back up (default: var/data, var/journal, var/models, var/llm, var/logs, reports).",
    ),
]
MLFLOW_EXTRA = "pip install 'hflite[mlflow]'"


def _out() -> Console:
    return Console()


#: A config with no [run] (configs/data.toml, or none at all) still names every path ops reads: these
#: commands never run it, but Settings needs one.
_NO_RUN = {"symbols": ["SPY"], "start": "2000-01-03", "end": "2000-01-04"}


def _settings(config: Path | None) -> Settings:
    """The config's paths (data, journals, models, LLM journal, logs, reports), env overrides applied."""
    from hflite.config import ConfigError, load_settings, read_toml

    try:
        has_run = config is not None and "run" in read_toml(config)
        return load_settings(config, None if has_run else {"run": _NO_RUN}, trades=False)
    except ConfigError as exc:
        fail(str(exc))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def backup(
    to: Annotated[Path, typer.Option("--to", help="The backup folder (a second disk); created if missing.")],
    config: ConfigOpt = None,
    keep: Annotated[int, typer.Option(min=1, help="Snapshots kept; older ones are removed.")] = 7,
    archive_older_than: Annotated[
        int | None,
        typer.Option(
            "--archive-older-than",
            metavar="DAYS",
            min=0,
            help="First move to DIR/archive what the working disk no longer needs: previous data versions "
            "superseded more than DAYS ago (never a current partition, nor a version a report left on "
            "the disk or \\[data] pin reads) and report folders older than DAYS. Never a journal. "
            "`hflite restore --from DIR --archive` brings them back.",
        ),
    ] = None,
) -> None:
    r"""Snapshot the data store, journals, model registry, LLM journal, logs and reports into DIR/<UTC time>/.

    Incremental: files unchanged since the previous snapshot are hard links to it, so every snapshot is complete and costs only what changed. SQLite files (journals) are copied with SQLite's backup API, consistent even while a runtime writes. Each file's size, sha256 and mode go in the snapshot's manifest.json and are checked after writing. A full disk or any write error removes the partial snapshot and exits 1; earlier snapshots are untouched.
    Example (nightly, from cron): hflite backup --to /mnt/backup/hflite --config configs/paper.toml --keep 14 --archive-older-than 90
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli_ai import ProgressBar
    from hflite.ops.backup import BackupError
    from hflite.ops.backup import backup as run_backup

    settings = _settings(config)
    try:
        with ProgressBar() as bar:
            result = run_backup(
                settings,
                to,
                keep=keep,
                archive_older_than_days=archive_older_than,
                config=str(config or ""),
                progress=bar,
            )
    except BackupError as exc:
        fail(str(exc), code=1)
    out = _out()
    if result.archived is not None:
        a = result.archived
        out.print(
            f"archived {len(a.versions)} superseded data version(s) and {len(a.reports)} report folder(s) "
            f"({_mb(a.bytes)}) to {escape(str(to / 'archive'))}",
            highlight=False,
        )
    out.print(
        f"snapshot {escape(str(result.snapshot))}: {result.files} files, {result.linked} unchanged "
        f"(hard-linked), {result.copied} copied ({_mb(result.bytes_copied)})",
        highlight=False,
    )
    if result.removed:
        out.print(f"retention (--keep {keep}): removed {', '.join(result.removed)}", highlight=False)


def restore(
    source: Annotated[Path, typer.Option("--from", help="The backup folder `hflite backup --to` wrote.")],
    snapshot: Annotated[
        str | None, typer.Option(help="The snapshot to restore (a folder name in DIR; default: the newest).")
    ] = None,
    into: Annotated[
        Path | None,
        typer.Option(
            help="Restore under this folder (each part at its configured relative path, e.g. "
            "ROOT/var/data). Default: where the config's paths point."
        ),
    ] = None,
    config: ConfigOpt = None,
    archive: Annotated[
        bool,
        typer.Option(
            "--archive",
            help="Bring back the archive tier instead (DIR/archive): the moved data versions into the "
            "store, the moved report folders into report.dir. The archive keeps its copies.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite non-empty targets (never a journal a runtime uses).")
    ] = False,
) -> None:
    r"""Restore a snapshot (the newest, or --snapshot NAME) and verify every checksum.

    Every file's sha256 is checked against the snapshot's manifest before anything is written: a damaged file is named and nothing is restored. A target that already holds data is refused unless --force, and a journal that a running runtime owns is always refused. Journals are restored whole, without stale -wal/-shm files.
    Example: hflite restore --from /mnt/backup/hflite --into /srv/hflite-restored
    Archive tier: hflite restore --from /mnt/backup/hflite --archive --config configs/paper.toml
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    from hflite.cli_ai import ProgressBar
    from hflite.ops.backup import BackupError, restore_archive
    from hflite.ops.backup import restore as run_restore

    settings = _settings(config)
    try:
        with ProgressBar() as bar:
            if archive:
                result = restore_archive(source, settings=settings, into=into, progress=bar)
            else:
                result = run_restore(
                    source, settings=settings, snapshot=snapshot, into=into, force=force, progress=bar
                )
    except BackupError as exc:
        fail(str(exc), code=1)
    out = _out()
    what = "archive" if archive else f"snapshot {result.snapshot}"
    out.print(f"restored {what}: {result.files} files verified", highlight=False)
    for name, path in result.targets.items():
        out.print(f"  {name}: {escape(str(path))}", highlight=False)
    for note in result.notes:
        out.print(f"[yellow]note:[/] {escape(note)}", highlight=False)


def mlflow_ui(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML config file (for its ai.registry_dir).")
    ] = None,
    run: Annotated[
        bool, typer.Option("--run", help="Start the MLflow UI instead of printing the command.")
    ] = False,
    host: Annotated[str, typer.Option(help="Address the UI listens on (keep it local).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the UI.")] = 5000,
) -> None:
    r"""Show (or --run) the MLflow UI over the model registry's tracking database.

    With MLflow installed (the hflite\[mlflow] extra), every model `hflite train` saves to the registry is also an MLflow run in experiment "hflite": its parameters (model.*, kind, seed, features, windows, data and code versions), its out-of-sample metrics (hit_rate, auc, brier, log_loss, ic, ...) and its files as artifacts. They live in <ai.registry_dir>/mlflow.db and <ai.registry_dir>/mlruns: local files only.
    Example: hflite mlflow-ui --config configs/ai.toml --run
    """  # noqa: E501  (one line per paragraph: the help wraps it to the terminal)
    settings = _settings(config)
    root = Path(settings.ai.registry_dir).expanduser().absolute()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    if find_spec("mlflow") is None:
        fail(f"MLflow is not installed: {MLFLOW_EXTRA}", code=1)
    exe = shutil.which("mlflow")
    argv = [exe] if exe else [sys.executable, "-m", "mlflow"]
    argv += ["ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    out = _out()
    if not (root / "mlflow.db").is_file():
        out.print(
            f"[yellow]note:[/] no MLflow runs in {escape(str(root))} yet: `hflite train` logs each model it "
            "saves there once MLflow is installed",
            highlight=False,
        )
    shown = shlex.join(["mlflow", *argv[argv.index("ui") :]])
    if not run:
        out.print(shown, highlight=False, soft_wrap=True)
        out.print(
            f"logged per model: parameters, OOS metrics and the model files (experiment 'hflite'); open "
            f"http://{host}:{port} once it runs, or add --run",
            highlight=False,
        )
        return
    out.print(f"starting: {escape(shown)}  (Ctrl-C stops it)", highlight=False)
    sys.stdout.flush()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    # exec, not a child: Ctrl-C, SIGTERM and the exit code are mlflow's own, and nothing is left behind
    os.execvpe(argv[0], argv, env)  # noqa: S606  (argv built above, no shell)
