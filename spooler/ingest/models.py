"""The ingest files as pydantic models (pure): the proxy and sync job specs, the manifest
written per source, and the sync result. JSON Schemas and TypeScript types come from here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from spooler.export.models import LocalSourcePath
from spooler.jobkind import JobSpec, SpecModel

_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"


class WaveformOptions(SpecModel):
    """Peaks for a waveform display (BBC audiowaveform JSON, version 2)."""

    bits: Literal[8, 16] = Field(8, description="Resolution of each min/max value.")
    pixels_per_second: Literal[25, 50, 100, 200] = Field(
        100, description="Min/max pairs per second of audio (zoom level of the data)."
    )


class ProxyJob(JobSpec):
    """One source -> an H.264 proxy, its waveform and poster, and its manifest."""

    kind: Literal["proxy"]
    source: LocalSourcePath = Field(description="Path relative to a media root.")
    height: Literal[720, 1080] | None = Field(
        None, description="Short side of the proxy picture; never upscaled. Default: config."
    )
    gop_frames: int | None = Field(
        None,
        ge=1,
        le=600,
        description="Keyframe interval in frames (1 = all-intra). "
        "Default: half a second. Capped by config.",
    )
    waveform: WaveformOptions | None = Field(
        default_factory=WaveformOptions, description="null: no waveform."
    )
    poster: bool = Field(True, description="A JPEG poster frame beside the proxy.")


class SyncInput(SpecModel):
    id: str = Field(pattern=_ID, description="The angle's id in the export job.")
    source: LocalSourcePath = Field(description="Path relative to a media root.")


class SyncJob(JobSpec):
    """Angles (and an external recorder) -> each one's syncOffset, from their sound."""

    kind: Literal["sync"]
    angles: list[SyncInput] = Field(min_length=1, max_length=64)
    external_audio: SyncInput | None = Field(
        None, description="An external recorder; its result is export's audio.offset."
    )
    reference: str | None = Field(
        None, description="Angle whose syncOffset is 0 (the timeline's clock). Default: first."
    )
    fps: float = Field(
        30.0, gt=0, le=240, description="Frame rate of the edit: drift over a frame is flagged."
    )
    min_overlap_seconds: float = Field(
        10.0, gt=0, le=3600, description="Shorter overlaps with the reference are not placed."
    )
    max_offset_seconds: float | None = Field(
        None, gt=0, description="Search offsets within ± this (default: any overlap)."
    )

    @model_validator(mode="after")
    def _ids(self) -> SyncJob:
        ids = [a.id for a in self.angles]
        ids += [self.external_audio.id] if self.external_audio else []
        if len(set(ids)) != len(ids):
            raise ValueError("angle ids (and externalAudio.id) must be unique")
        if self.reference is not None and self.reference not in {a.id for a in self.angles}:
            raise ValueError(f"reference {self.reference!r} is not an angle id")
        return self

    @property
    def reference_id(self) -> str:
        return self.reference or self.angles[0].id

    def inputs(self) -> list[SyncInput]:
        """Reference first, then the other angles, then the recorder."""
        ref = self.reference_id
        first = [a for a in self.angles if a.id == ref]
        rest = [a for a in self.angles if a.id != ref]
        return first + rest + ([self.external_audio] if self.external_audio else [])


class _Out(BaseModel):
    """Files the daemon writes: camelCase, no unknown fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ManifestWaveform(_Out):
    path: str = Field(description="BBC audiowaveform JSON (version 2), under the derived root.")
    bits: Literal[8, 16]
    sample_rate: int
    samples_per_pixel: int
    length: int = Field(description="Number of min/max pairs.")


class ProxyManifest(_Out):
    """derived/manifests/<source>.json: what the editor needs to show and cut one source."""

    schema_version: Literal[1] = 1
    source: str = Field(description="The original: its path relative to a media root.")
    content_key: str = Field(
        description="Identity of the original's bytes: v1:<size>:<mtime_ns>:<sha256 of its first "
        "and last MiB>. A different key means a different file."
    )
    source_size_bytes: int
    proxy: str = Field(description="The proxy's path under the derived root (content-addressed).")
    proxy_size_bytes: int
    duration_seconds: float = Field(description="Of the proxy's video; equals the source's.")
    frame_count: int
    frame_rate: str = Field(description="Exact, as a fraction: '30000/1001'.")
    frame_rate_float: float
    constant_rate_source: bool = Field(description="False: a variable-rate source, resampled.")
    width: int = Field(description="Proxy picture as shown (rotation applied).")
    height: int
    source_width: int = Field(description="Original picture as shown.")
    source_height: int
    gop_frames: int
    has_audio: bool
    audio_channels: int | None
    timecode: str | None = Field(description="Start timecode of the original, kept in the proxy.")
    waveform: ManifestWaveform | None
    poster: str | None = Field(description="JPEG under the derived root.")
    job_id: str
    created_at: str


class SyncDrift(_Out):
    ppm: float = Field(description="Clock drift against the reference, parts per million.")
    offset_at_start: float = Field(description="syncOffset fitted at the overlap's start (s).")
    offset_at_end: float = Field(description="syncOffset fitted at the overlap's end (s).")
    overlap_start: float = Field(description="Reference time where the overlap begins (s).")
    overlap_end: float
    exceeds_frame: bool = Field(
        description="The offset moves by more than one frame (1/fps) over the overlap: one "
        "syncOffset cannot hold the whole edit in sync."
    )


class SyncPlacement(_Out):
    id: str
    source: str
    placed: bool
    sync_offset: float | None = Field(
        description="Source time showing timeline 0 (docs/export.md), at the overlap's "
        "middle; null when not placed. For externalAudio this is audio.offset."
    )
    confidence: float = Field(ge=0, le=1)
    reason: Literal["reference", "placed", "silent", "no_overlap", "ambiguous"] = Field(
        description="Why placed or not: never guessed."
    )
    drift: SyncDrift | None = None
    windows_used: int = Field(0, description="Full-rate windows that agreed with the fit.")
    windows_tried: int = 0


class SyncResult(_Out):
    """jobs/<id>/sync.json: fill each angle's syncOffset directly from it."""

    schema_version: Literal[1] = 1
    reference: str
    fps: float
    angles: list[SyncPlacement]
    external_audio: SyncPlacement | None = None
