"""The export job as the web app writes it: pydantic models, camelCase JSON.

Sync-offset convention (one sign, used everywhere): an angle's `syncOffset` is the time in
its SOURCE FILE that shows timeline time 0, so  source_time = timeline_time + syncOffset.
A camera that started recording 3 s before the timeline's zero has syncOffset = 3.0.
The same rule holds for an external audio file's `offset`.

Cross-field checks raise a ValidationError whose location is the offending field, so
`parse_job` reports "segments[7].end: must be greater than start" rather than "(root)".

Longer than most modules because the job file is one contract with the web app: its
models and the cross-field rules that need the whole edit (angles, cuts, range,
transitions, watermark) are kept together; the deliverables and the output settings have
their own modules (deliverables.py, output.py), the copy rule is needs_reencode.py.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator
from pydantic.alias_generators import to_snake
from pydantic_core import PydanticCustomError

from spooler.config import ExportSettings
from spooler.export import needs_reencode
from spooler.export.deliverables import (
    MAX_RENDITIONS,
    PosterSpec,
    Rendition,
    StoryboardSpec,
    check_deliverables,
    output_count,
)
from spooler.export.output import OutputSpec
from spooler.export.rules import (
    MAX_URL_CHARS,
    TIME_EPSILON,
    check_source_name,
    check_source_syntax,
    fail,
)
from spooler.jobkind import JobSpec, SpecModel

_ANGLE_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
MAX_TRANSITION_SECONDS = 60


def _source_path(value: str) -> str:
    problem = check_source_name(value)
    if problem:
        raise PydanticCustomError("source_path", problem)
    return value


def _local_source_path(value: str) -> str:
    problem = check_source_syntax(value)
    if problem:
        raise PydanticCustomError("source_path", problem)
    return value


# A media-root-relative path only, for jobs that read their sources from local media (the
# ingest kinds: a proxy is written beside its original). A URL is refused here, at parse
# time, so it never reaches an error message or a status file.
LocalSourcePath = Annotated[
    str,
    Field(max_length=1024, description="A path relative to a media root."),
    AfterValidator(_local_source_path),
]


# A media-root-relative path, or a remote source (s3://bucket/key, an https or http URL),
# checked the same way wherever an export job names a file. Remote names are checked for
# their shape here and against the operator's allow-lists (s3: settings) when the job runs
# (docs/s3.md).
SourcePath = Annotated[
    str,
    Field(
        max_length=MAX_URL_CHARS,
        description="A path relative to a media root (at most 1024 characters), or a remote "
        "source: s3://bucket/key, an https:// (presigned) URL, or http:// for a host in "
        "s3.http_hosts, allowed by the operator's "
        "s3 settings (docs/s3.md).",
    ),
    AfterValidator(_source_path),
]


# Export from proxies (docs/ingest.md): explicit per source, never guessed from the path.
SourceKind = Literal["original", "proxy"]
SOURCE_KIND_HELP = (
    "original: `source` is a media file under a media root. proxy: `source` is a proxy's "
    "path under the derived-media root (as its manifest names it); the export reads the "
    "original that the proxy's manifest names, and the preflight says so."
)


class Angle(SpecModel):
    id: str = Field(pattern=_ANGLE_ID, description="Referenced by segments, switches and audio.")
    source: SourcePath = Field(
        description="Path relative to a media root, or an allowed remote source (docs/s3.md)."
    )
    source_kind: SourceKind = Field("original", description=SOURCE_KIND_HELP)
    sync_offset: float = Field(
        0.0, ge=-86_400, le=86_400, description="Source time shown at timeline 0 (seconds)."
    )


TransitionType = Literal["cut", "crossfade", "fadeblack", "fadewhite"]


class Transition(SpecModel):
    """How one angle gives way to the next at a cut; centred on the cut (see docs/export.md)."""

    type: TransitionType = Field(
        description="cut: hard cut; crossfade: dissolve; fadeblack/fadewhite: through a colour."
    )
    duration: float = Field(
        0.5, gt=0, le=MAX_TRANSITION_SECONDS, description="Seconds, centred on the cut."
    )


class Segment(SpecModel):
    angle: str
    start: float = Field(ge=0, description="Timeline seconds, inclusive.")
    end: float = Field(gt=0, description="Timeline seconds, exclusive.")
    transition: Transition | None = Field(
        None, description="Into this segment, at its start (default: the job's `transition`)."
    )


class Switch(SpecModel):
    at: float = Field(ge=0, description="Timeline seconds at which `angle` takes over.")
    angle: str
    transition: Transition | None = Field(
        None, description="At `at` (default: the job's `transition`)."
    )


class Loudness(SpecModel):
    """EBU R128 loudness normalisation of the finished track (ffmpeg's loudnorm, one pass)."""

    target_lufs: float = Field(-16.0, ge=-70, le=-5, description="Integrated loudness (LUFS).")
    true_peak: float = Field(-1.5, ge=-9, le=0, description="Maximum true peak (dBTP).")
    loudness_range: float = Field(11.0, ge=1, le=50, description="Target range (LU).")


class AngleAudio(SpecModel):
    """One continuous track from an angle's own audio (the default: the first angle)."""

    mode: Literal["angle"] = "angle"
    angle: str | None = Field(None, description="Default: the first angle.")
    loudness: Loudness | None = None


class Ambient(SpecModel):
    """An angle's own sound mixed under the external recording (room tone, audience)."""

    angle: str
    gain_db: float = Field(-12.0, ge=-60, le=24)


class ExternalAudio(SpecModel):
    """An external recording (e.g. a lavalier mic) aligned by its own offset."""

    mode: Literal["external"]
    source: SourcePath
    source_kind: SourceKind = Field("original", description=SOURCE_KIND_HELP)
    offset: float = Field(0.0, ge=-86_400, le=86_400, description="Source time at timeline 0.")
    gain_db: float = Field(0.0, ge=-60, le=24)
    ambient: Ambient | None = Field(None, description="Mix an angle's sound under it.")
    loudness: Loudness | None = None


class FollowAudio(SpecModel):
    """Audio of whichever angle is on screen, with 5 ms fades at each cut (no clicks)."""

    mode: Literal["follow"]
    loudness: Loudness | None = None


class NoAudio(SpecModel):
    mode: Literal["none"]


AudioSpec = Annotated[
    AngleAudio | ExternalAudio | FollowAudio | NoAudio, Field(discriminator="mode")
]


Mode = Literal["reencode", "copy", "smart", "auto"]


class TimeRange(SpecModel):
    start: float = Field(ge=0)
    end: float = Field(gt=0)


WatermarkPosition = Literal["top-left", "top-right", "bottom-left", "bottom-right", "center"]


MAX_WATERMARK_TEXT = 200


def _watermark_text(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("watermark_text", "must contain a visible character")
    bad = next((c for c in value if not c.isprintable()), None)
    if bad is not None:
        # Control, format (e.g. bidi overrides), separator other than the space, unassigned.
        raise PydanticCustomError(
            "watermark_text",
            "must be printable: no control, format or line/paragraph separator characters "
            "(found U+{code})",
            {"code": f"{ord(bad):04X}"},
        )
    return value


WatermarkText = Annotated[
    str,
    Field(min_length=1, max_length=MAX_WATERMARK_TEXT),
    AfterValidator(_watermark_text),
]


class Watermark(SpecModel):
    """A PNG (with alpha) from a media root, or a line of text, over the finished picture.

    Exactly one of `image` and `text` (checked by ExportJob, with JSON paths)."""

    image: SourcePath | None = Field(
        None, description="Path of a PNG relative to a media root, or an allowed remote source."
    )
    text: WatermarkText | None = Field(
        None,
        description="One line of text (1-200 printable characters), drawn literally in the "
        "operator's font (config export.watermark_font).",
    )
    position: WatermarkPosition = "bottom-right"
    margin: float = Field(
        0.02, ge=0, le=0.5, description="Distance from the edges, as a fraction of output width."
    )
    scale: float = Field(
        0.15, gt=0, le=1, description="Image only: its width as a fraction of output width."
    )
    text_size: float = Field(
        0.05, gt=0, le=0.5, description="Text only: font size as a fraction of output height."
    )
    color: str = Field(
        "white",
        pattern=r"^(white|black|#[0-9A-Fa-f]{6})$",
        description="Text only: white, black or #RRGGBB.",
    )
    opacity: float = Field(1.0, ge=0, le=1)
    start: float | None = Field(None, ge=0, description="Timeline seconds (default: start).")
    end: float | None = Field(None, gt=0, description="Timeline seconds (default: end).")


class ExportJob(JobSpec):
    """A multicam export: which angle is on screen when, what audio, and how to encode."""

    kind: Literal["export"] = "export"
    angles: list[Angle] = Field(min_length=1)
    segments: list[Segment] | None = Field(
        None, description="Ordered, contiguous, non-overlapping."
    )
    switches: list[Switch] | None = Field(None, description="Angle changes; needs `end`.")
    end: float | None = Field(None, gt=0, description="Timeline end, with `switches` only.")
    range: TimeRange | None = Field(None, description="Export only this part of the timeline.")
    audio: AudioSpec = AngleAudio()
    transition: Transition | None = Field(
        None, description="At every cut without its own (default: hard cuts)."
    )
    watermark: Watermark | None = None
    output: OutputSpec = OutputSpec()
    mode: Mode = Field(
        "auto",
        description="reencode: exact; copy: snap to keyframes; smart: exact, encoding only "
        "around the cuts; auto: copy if exact, else smart if possible, else reencode.",
    )
    renditions: list[Rendition] = Field(
        default_factory=list,
        max_length=MAX_RENDITIONS,
        description="More outputs of the same edit, encoded in the same ffmpeg pass.",
    )
    poster: PosterSpec | None = Field(None, description="A still image of the output.")
    storyboard: StoryboardSpec | None = Field(None, description="Scrubbing previews: sprite + VTT.")

    @model_validator(mode="after")
    def _edit(self) -> ExportJob:
        known: set[str] = set()
        for index, angle in enumerate(self.angles):
            if angle.id in known:
                raise fail(
                    ("angles", index, "id"),
                    "duplicate_angle",
                    f"angle id {angle.id!r} is used twice",
                    angle.id,
                )
            known.add(angle.id)
        if (self.segments is None) == (self.switches is None):
            raise fail(("segments",), "edit_form", "give either segments or switches (+ end)", None)
        if self.segments is not None:
            self._check_segments(self.segments, known)
            timeline = (self.segments[0].start, self.segments[-1].end)
        else:
            assert self.switches is not None
            timeline = self._check_switches(self.switches, known)
        if self.range is not None:
            if self.range.end <= self.range.start + TIME_EPSILON:
                raise fail(
                    ("range", "end"),
                    "range_order",
                    "must be greater than range.start",
                    self.range.end,
                )
            if (
                self.range.start < timeline[0] - TIME_EPSILON
                or self.range.end > timeline[1] + TIME_EPSILON
            ):
                raise fail(
                    ("range",),
                    "range_outside",
                    f"must lie within the timeline {timeline[0]:g}-{timeline[1]:g} s",
                    None,
                )
        if (
            isinstance(self.audio, AngleAudio)
            and self.audio.angle is not None
            and self.audio.angle not in known
        ):
            raise fail(
                ("audio", "angle"),
                "unknown_angle",
                f"{self.audio.angle!r} is not one of the angles",
                self.audio.angle,
            )
        if isinstance(self.audio, ExternalAudio) and self.audio.ambient is not None:
            ambient = self.audio.ambient.angle
            if ambient not in known:
                raise fail(
                    ("audio", "external", "ambient", "angle"),
                    "unknown_angle",
                    f"{ambient!r} is not one of the angles",
                    ambient,
                )
        if self.output.video_codec == "copy" and self.mode == "reencode":
            raise fail(
                ("output", "videoCodec"), "copy_option", "copy needs mode copy or auto", "copy"
            )
        self._check_transitions()
        if self.watermark is not None:
            self._check_watermark(self.watermark, timeline)
        check_deliverables(self)
        # Transitions, a watermark, renditions: what mode copy cannot do (one rule).
        refusal = needs_reencode.copy_refusal(self)
        if refusal is not None:
            raise refusal
        return self

    def edit_segments(self) -> tuple[str, list[Segment]]:
        """The edit as segments, whichever form the file used, and that form's name: the one
        place switches become segments (each holds until the next; the last until `end`)."""
        if self.segments is not None:
            return "segments", self.segments
        assert self.switches is not None and self.end is not None
        bounds = [s.at for s in self.switches] + [self.end]
        return "switches", [
            Segment(angle=s.angle, start=bounds[i], end=bounds[i + 1], transition=s.transition)
            for i, s in enumerate(self.switches)
        ]

    def _check_transitions(self) -> None:
        """Each transition sits at a cut, and half of it fits in the stretch of the angle on
        either side (after what the neighbouring transition already uses of it)."""
        name, segments = self.edit_segments()
        if segments[0].transition is not None:
            raise fail(
                (name, 0, "transition"),
                "transition_position",
                f"the first of the {name} has no cut before it",
                None,
            )
        # Stretches of one angle (adjacent segments on the same angle are one: no cut).
        runs: list[tuple[float, float, int]] = []  # start, end, index of the first segment
        for index, seg in enumerate(segments):
            if runs and segments[runs[-1][2]].angle == seg.angle:
                runs[-1] = (runs[-1][0], seg.end, runs[-1][2])
            else:
                runs.append((seg.start, seg.end, index))
        used = 0.0  # of the current run, by the transition at its start
        for before, after in itertools.pairwise(runs):
            own = segments[after[2]].transition
            spec = own or self.transition
            if spec is None or spec.type == "cut":
                used = 0.0
                continue
            path: tuple[int | str, ...] = (
                (name, after[2], "transition") if own is not None else ("transition",)
            )
            half = spec.duration / 2
            cut = after[0]
            sides = (
                (
                    "before",
                    before,
                    before[1] - before[0] - used,
                    " less the transition at its start",
                ),
                ("after", after, after[1] - after[0], ""),
            )
            for side, run, room, less in sides:
                if half > room + TIME_EPSILON:
                    raise fail(
                        (*path, "duration"),
                        "transition_too_long",
                        f"{spec.duration:g} s does not fit: half of it ({half:g} s) is needed "
                        f"{side} the cut at {cut:g} s, where {segments[run[2]].angle} has "
                        f"{max(room, 0):g} s (its stretch {run[0]:g}-{run[1]:g} s{less})",
                        spec.duration,
                    )
            used = half

    def _check_watermark(self, mark: Watermark, timeline: tuple[float, float]) -> None:
        if (mark.image is None) == (mark.text is None):
            raise fail(
                ("watermark",),
                "watermark_kind",
                "needs exactly one of image and text",
                None,
            )
        # A field of the other kind would be silently ignored: refuse it instead.
        other = ("textSize", "color") if mark.image is not None else ("scale",)
        for field in other:
            if to_snake(field) in mark.model_fields_set:
                raise fail(
                    ("watermark", field),
                    "watermark_option",
                    f"applies to {'a text' if mark.image is not None else 'an image'} "
                    "watermark only",
                    getattr(mark, to_snake(field)),
                )
        for field in ("start", "end"):
            value = getattr(mark, field)
            if value is not None and not (
                timeline[0] - TIME_EPSILON <= value <= timeline[1] + TIME_EPSILON
            ):
                raise fail(
                    ("watermark", field),
                    "range_outside",
                    f"must lie within the timeline {timeline[0]:g}-{timeline[1]:g} s",
                    value,
                )
        start = mark.start if mark.start is not None else timeline[0]
        end = mark.end if mark.end is not None else timeline[1]
        if end <= start + TIME_EPSILON:
            raise fail(
                ("watermark", "end" if mark.end is not None else "start"),
                "range_order",
                "watermark.end must be greater than watermark.start",
                end if mark.end is not None else start,
            )

    def _check_segments(self, segments: list[Segment], known: set[str]) -> None:
        if not segments:
            raise fail(("segments",), "too_short", "needs at least one segment", segments)
        for index, seg in enumerate(segments):
            if seg.angle not in known:
                raise fail(
                    ("segments", index, "angle"),
                    "unknown_angle",
                    f"{seg.angle!r} is not one of the angles",
                    seg.angle,
                )
            if seg.end <= seg.start + TIME_EPSILON:
                raise fail(
                    ("segments", index, "end"),
                    "segment_order",
                    "must be greater than start",
                    seg.end,
                )
            if index and abs(seg.start - segments[index - 1].end) > TIME_EPSILON:
                kind = "overlaps" if seg.start < segments[index - 1].end else "leaves a gap after"
                raise fail(
                    ("segments", index, "start"),
                    "not_contiguous",
                    f"{kind} the previous segment (which ends at {segments[index - 1].end:g} s)",
                    seg.start,
                )
        if self.end is not None:
            raise fail(("end",), "edit_form", "is only used with switches", self.end)

    def _check_switches(self, switches: list[Switch], known: set[str]) -> tuple[float, float]:
        if not switches:
            raise fail(("switches",), "too_short", "needs at least one switch", switches)
        for index, switch in enumerate(switches):
            if switch.angle not in known:
                raise fail(
                    ("switches", index, "angle"),
                    "unknown_angle",
                    f"{switch.angle!r} is not one of the angles",
                    switch.angle,
                )
            if index and switch.at <= switches[index - 1].at + TIME_EPSILON:
                raise fail(
                    ("switches", index, "at"),
                    "switch_order",
                    "must be later than the previous switch",
                    switch.at,
                )
        if self.end is None:
            raise fail(("end",), "missing", "is required with switches", None)
        if self.end <= switches[-1].at + TIME_EPSILON:
            raise fail(("end",), "switch_order", "must be later than the last switch", self.end)
        return switches[0].at, self.end

    @property
    def loudness(self) -> Loudness | None:
        return None if isinstance(self.audio, NoAudio) else self.audio.loudness

    @property
    def audio_angle(self) -> str | None:
        """The angle whose audio is the continuous track, for mode 'angle'."""
        if isinstance(self.audio, AngleAudio):
            return self.audio.angle or self.angles[0].id
        return None

    def angle(self, angle_id: str) -> Angle:
        return next(a for a in self.angles if a.id == angle_id)


def limit_errors(job: ExportJob, limits: ExportSettings) -> list[dict[str, str]]:
    """Configurable bounds, checked once settings are known (the model cannot see them)."""
    errors: list[dict[str, str]] = []

    def add(path: str, message: str) -> None:
        errors.append({"path": path, "code": "limit", "message": message})

    if len(job.angles) > limits.max_angles:
        add("angles", f"{len(job.angles)} angles is over the limit of {limits.max_angles}")
    name, edits = job.edit_segments()
    if len(edits) > limits.max_segments:
        add(name, f"{len(edits)} {name} is over the limit of {limits.max_segments}")
    start, end = edits[0].start, edits[-1].end
    if job.range is not None:
        start, end = job.range.start, job.range.end
    if end - start > limits.max_timeline_seconds:
        add(
            "range" if job.range else name,
            f"{end - start:g} s of timeline is over the limit of {limits.max_timeline_seconds:g} s",
        )
    if output_count(job) > limits.max_outputs:
        add("renditions", f"{output_count(job)} outputs is over the limit of {limits.max_outputs}")
    return errors
