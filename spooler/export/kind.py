"""ExportKind: the thin shell. Probe, plan (pure), report, run, verify, publish.

The data path: sources.inspect_sources (open + probe) -> plan.plan_export (pure) ->
Command list run through ctx.run_ffmpeg (and remux.py for copy/smart) -> verify.py and
stills.py (every output checked) -> ctx.publish, all outputs or none.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from spooler.config import Settings
from spooler.errors import ErrorCode, JobError
from spooler.export.commands import Command, EncodedPart, Plan, PlanPaths
from spooler.export.deliverables import rendition_temps, temp_paths
from spooler.export.models import ExportJob, limit_errors
from spooler.export.plan import plan_export
from spooler.export.probed import Source
from spooler.export.remux import remux
from spooler.export.sources import (
    close_sources,
    inspect_sources,
    non_reference_packets,
    shown_sources,
)
from spooler.export.stills import make_thumbnails
from spooler.export.textmark import no_font
from spooler.export.timeline import job_pieces
from spooler.export.verify import shown_size, verify_output, verify_renditions
from spooler.ffmpeg import drops_input_packets
from spooler.fonts import resolve_font
from spooler.ingest.fromproxy import from_proxies
from spooler.jobkind import JobContext, JobSpec, Step
from spooler.s3.locations import parse_destination
from spooler.s3.remotes import JobRemotes
from spooler.status import OutputInfo

LOGGED_FILE_LIMIT = 20_000
# Failures that a remote source's read error explains better (a 403 mid-job makes ffmpeg
# fail or stall, PyAV report unreadable media): the gateway's error replaces them.
EXPLAINED_BY_THE_SOURCE = frozenset(
    {
        ErrorCode.FFMPEG_FAILED,
        ErrorCode.SOURCE_UNREADABLE,
        ErrorCode.UNSUPPORTED_MEDIA,
        ErrorCode.STALLED,
        ErrorCode.VERIFY_FAILED,
    }
)
REMOTE_READ = "by range through the daemon's loopback gateway; nothing is staged on disk"


class ExportKind:
    name: ClassVar[str] = "export"
    spec_model: ClassVar[type[JobSpec]] = ExportJob

    def limit_errors(self, spec: ExportJob, settings: Settings) -> list[dict[str, Any]]:
        return list(limit_errors(spec, settings.export))

    def run(self, spec: ExportJob, ctx: JobContext) -> None:
        if spec.output.destination:  # refused before any work (source_not_allowed)
            parse_destination(spec.output.destination, ctx.settings.s3)
        # Sources named as proxies are exported from their originals (docs/ingest.md).
        spec, proxies = from_proxies(spec, ctx.settings)
        # Remote sources are planned under shown names (no URL query: no signature).
        spec, remote_names = shown_sources(spec)
        remote = JobRemotes(ctx.remote_sources, ctx.settings.s3, remote_names)
        used = {p.angle for p in job_pieces(spec)}
        try:
            # Each source is opened once here and read through /proc/self/fd/N (remote: its
            # gateway URL) from then on.
            sources = inspect_sources(spec, ctx.settings.media_roots, used, remote)
            remote.clear_errors()  # what the inspection tolerated (an index's miss)
            try:
                self._run(spec, ctx, sources, proxies, remote)
            finally:
                close_sources(sources)
        except JobError as exc:
            cause = remote.error()
            if cause is not None and exc.code in EXPLAINED_BY_THE_SOURCE:
                ctx.log_line(f"# {exc.code.value} explained by a remote source: {cause.message}")
                raise cause from exc
            raise
        finally:
            remote.close()

    def _run(
        self,
        spec: ExportJob,
        ctx: JobContext,
        sources: dict[str, Source],
        proxies: list[dict[str, Any]] | None = None,
        remote: JobRemotes | None = None,
    ) -> None:
        file_name = spec.output.safe_file_name
        extra = temp_paths(spec, ctx.temp_path)  # renditions, poster, storyboard
        paths = PlanPaths(
            output=ctx.temp_path(file_name),
            audio=ctx.temp_path(file_name + ".audio.mp4"),
            graph=ctx.temp_path(file_name + ".graph.txt"),
            # Per block: one list per angle, the audio bed and an ambient track mixed under
            # it; one block per smart-render encoder and one more for everything else.
            lists=tuple(
                ctx.temp_path(f"{file_name}.{i}.ffconcat")
                for i in range((ctx.settings.export.smart_workers + 1) * (len(spec.angles) + 2))
            ),
            renditions=rendition_temps(spec, extra),
        )
        # The font of a text watermark: found here (I/O), so that planning stays pure.
        settings = with_font(spec, ctx.settings)
        # Smart render and the reencode drop warm-up packets with an input bitstream
        # filter: an older ffmpeg on PATH decodes them all instead (warmup.py).
        drops = non_reference_packets if drops_input_packets(ctx.ffmpeg) else None
        cores = len(os.sched_getaffinity(0))  # what ffmpeg's threads share
        plan = plan_export(spec, sources, settings, paths, drops, cores=cores)
        preflight = {**plan.preflight, **({"fromProxies": proxies} if proxies else {})}
        if remote is not None and remote.opened:
            preflight["remoteSources"] = [
                {"source": shown, "read": REMOTE_READ, "sizeBytes": opened.size}
                for shown, opened in remote.opened.items()
            ]
        ctx.set_preflight(preflight)
        if spec.mode == "smart" and plan.mode != "smart":
            ctx.warn("smart_unavailable", plan.reason)
        ctx.declare_outputs([file_name, *extra])
        for snap in plan.snaps:
            onto = "a clean stop of" if snap.label == "end" else "a keyframe of"
            ctx.warn(
                "cut_snapped",
                f"{snap.label}: cut moved from {snap.requested:.3f} s to {snap.actual:.3f} s "
                f"({snap.delta:+.3f} s) onto {onto} {snap.angle}",
                path=snap.label,
                angle=snap.angle,
                requested=snap.requested,
                actual=snap.actual,
                delta=round(snap.delta, 6),
            )
        fds = tuple(sorted(s.fd for s in sources.values() if s.fd is not None))
        self._execute(plan, spec, paths, ctx, fds)
        cause = remote.error() if remote is not None else None
        if cause is not None:
            # A read the gateway cut short (a source changed, the storage failed): ffmpeg
            # takes it for the input's end and may exit 0 on a truncated output.
            ctx.log_line(
                f"# the end of ffmpeg's input explained by a remote source: {cause.message}"
            )
            raise cause
        if remote is not None and remote.opened:
            # What the export fetched from the storage (probe and index included).
            fetched = remote.fetched()
            preflight["remoteSources"] = [
                {**entry, "bytesFetched": fetched.get(entry["source"], 0)}
                for entry in preflight["remoteSources"]
            ]
            ctx.set_preflight(preflight)
        # The main output is checked like every other output (verify.verify_output).
        info = verify_output(
            paths.output, plan, size=None, want_audio=plan.want_audio, name=file_name
        )
        # Every output verified before the first is published.
        ready = verify_renditions(plan)
        ready += make_thumbnails(spec, ctx, paths.output, info, extra, fds)
        ctx.encoded()  # the last ffmpeg has ended: publishing holds no slot
        for temp in (paths.audio, *paths.lists, *plan.intermediates, *_graph_files(paths)):
            temp.unlink(missing_ok=True)  # intermediates; the daemon only cleans up failures
        main = OutputInfo(
            path=file_name,
            size_bytes=paths.output.stat().st_size,
            duration_seconds=info.duration,
            width=shown_size(info)[0],
            height=shown_size(info)[1],
            mime_type=plan.mime_type,
        )
        ctx.publish(paths.output, file_name, _placed(main, spec, ctx))
        for item in ready:
            ctx.publish(item.temp, item.info.path, _placed(item.info, spec, ctx))

    def _execute(
        self, plan: Plan, spec: ExportJob, paths: PlanPaths, ctx: JobContext, fds: tuple[int, ...]
    ) -> None:
        steps = [
            Step(c.step, max(c.expected_seconds if c.weight is None else c.weight, 0.001))
            for c in plan.commands
        ]
        if plan.mode in ("copy", "smart"):
            steps.append(Step("copy", max(plan.remux_weight, 0.001)))
        if spec.poster is not None or spec.storyboard is not None:
            steps.append(Step("thumbnails", max(float(plan.duration), 0.001) / 20))
        ctx.declare_steps(steps)
        for batch in _batches(plan.commands):
            for command in batch:
                for path, text in command.files.items():
                    path.write_text(text, encoding="utf-8")
                    # The lists and graph are part of the command: keep them with it in the log.
                    shown = (
                        text if len(text) <= LOGGED_FILE_LIMIT else text[:LOGGED_FILE_LIMIT] + "..."
                    )
                    ctx.log_line(f"# {path.name} ({len(text)} characters):\n{shown.rstrip()}")
            ctx.check_cancelled()
            _run_batch(batch, ctx, fds)
        if plan.mode in ("copy", "smart"):
            ctx.check_cancelled()
            for segment in plan.copy_segments:
                if isinstance(segment, EncodedPart):
                    ctx.log_line(
                        f"# encoded {segment.label}: {segment.angle} {segment.path.name} "
                        f"frames {segment.first}+{segment.count} at pts {segment.pts}"
                    )
                    continue
                ctx.log_line(
                    f"# copy {segment.label}: {segment.angle} {segment.path} "
                    f"dts {segment.head_dts}..{segment.stop_dts} shift "
                    f"{float(segment.shift):+.6f} s"
                )
            remux(
                plan.copy_segments,
                plan.copy_audio,
                paths.output,
                spec.output.container,
                spec.output.faststart,
                ctx.check_cancelled,
                ctx.log_line,
                # Packet times start slightly below 0 (B-frame decode timestamps).
                lambda seconds: ctx.report_progress(
                    "copy", min(1.0, max(0.0, seconds / max(float(plan.duration), 1e-3)))
                ),
                plan.template,
            )


def with_font(job: ExportJob, settings: Settings) -> Settings:
    """Settings whose watermark_font is a readable font file, for a job with a text
    watermark (raises textmark.no_font); other jobs get `settings` as they are."""
    if job.watermark is None or job.watermark.text is None:
        return settings
    font = resolve_font(settings.export.watermark_font)
    if font is None:
        raise no_font(settings.export.watermark_font)
    export = settings.export.model_copy(update={"watermark_font": font})
    return settings.model_copy(update={"export": export})


def _graph_files(paths: PlanPaths) -> list[Path]:
    """The filter graph file and the per-command ones a smart render may write."""
    return [paths.graph, *paths.graph.parent.glob(glob.escape(paths.graph.name) + ".*")]


def _batches(commands: list[Command]) -> list[list[Command]]:
    """Consecutive parallel commands form one batch; every other command is its own."""
    batches: list[list[Command]] = []
    for command in commands:
        if command.parallel and batches and batches[-1][-1].parallel:
            batches[-1].append(command)
        else:
            batches.append([command])
    return batches


def _run_batch(batch: list[Command], ctx: JobContext, fds: tuple[int, ...]) -> None:
    """Run the commands of a batch at once. Each ffmpeg watches the cancel marker itself;
    the first failure is raised once all have stopped (nothing is left running)."""

    def run(command: Command) -> None:
        ctx.run_ffmpeg(
            command.args,
            step=command.step,
            expected_seconds=command.expected_seconds,
            pass_fds=fds,
        )

    if len(batch) == 1:
        run(batch[0])
        return
    with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="ffmpeg") as pool:
        futures = [pool.submit(run, command) for command in batch]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error


def _placed(info: OutputInfo, spec: ExportJob, ctx: JobContext) -> OutputInfo:
    """The output's remote URI when the job names a destination (the store uploads it)."""
    if not spec.output.destination:
        return info
    target = parse_destination(spec.output.destination, ctx.settings.s3)
    return info.model_copy(update={"uri": target.uri(ctx.job_id, info.path)})
