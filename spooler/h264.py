"""Just enough H.264 bitstream reading to join re-encoded pieces with copied packets.

A smart render writes one video track whose copied packets use the source's parameter
sets and whose re-encoded packets use ours. Both sets go into the track's avcC sample
entry under DIFFERENT ids (x264's `sps-id`), so every conformant decoder knows both from
the start and no parameter set is ever redefined mid-stream (which many decoders reject).
A decoder may switch to another SPS only at an IDR picture: copied stretches therefore
start at IDR keyframes, and every re-encoded piece starts with one.

Everything here reads bytes the probe or an encoder produced; malformed input raises
ValueError, which callers turn into a precise job error.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
MAX_PARAMETER_SET_ID = 31  # SPS ids are 0..31 (PPS ids go to 255; x264 gives both one id)


@dataclass(frozen=True)
class AvcConfig:
    """An avcC box (ISO/IEC 14496-15 AVCDecoderConfigurationRecord), split into parts."""

    profile: int
    compatibility: int
    level: int
    length_size: int  # bytes of each NAL unit's length prefix in the samples
    sps: tuple[bytes, ...]
    pps: tuple[bytes, ...]
    trailer: bytes  # the High-profile extension (chroma format, bit depths), kept as is

    @classmethod
    def parse(cls, data: bytes) -> AvcConfig:
        if len(data) < 7 or data[0] != 1:
            raise ValueError("not an avcC record (Annex B or missing extradata)")
        pos = 5
        sps: list[bytes] = []
        pps: list[bytes] = []
        for target, count_mask in ((sps, 0x1F), (pps, 0xFF)):
            count = data[pos] & count_mask
            pos += 1
            for _ in range(count):
                size = int.from_bytes(data[pos : pos + 2], "big")
                unit = data[pos + 2 : pos + 2 + size]
                if len(unit) != size or not size:
                    raise ValueError("truncated parameter set in avcC")
                target.append(unit)
                pos += 2 + size
        return cls(data[1], data[2], data[3], (data[4] & 3) + 1, tuple(sps), tuple(pps), data[pos:])

    def to_bytes(self) -> bytes:
        out = bytearray(
            [1, self.profile, self.compatibility, self.level, 0xFC | (self.length_size - 1)]
        )
        out.append(0xE0 | len(self.sps))
        for unit in self.sps:
            out += len(unit).to_bytes(2, "big") + unit
        out.append(len(self.pps))
        for unit in self.pps:
            out += len(unit).to_bytes(2, "big") + unit
        return bytes(out + self.trailer)

    def ids(self) -> set[int]:
        """Every SPS and PPS id this record defines."""
        return {sps_id(unit) for unit in self.sps} | {pps_ids(unit)[0] for unit in self.pps}

    def joined(self, other: AvcConfig) -> AvcConfig:
        """This record plus `other`'s parameter sets (which must use different ids)."""
        clash = self.ids() & other.ids()
        if clash:
            raise ValueError(f"parameter set ids {sorted(clash)} are defined twice")
        if other.length_size != self.length_size:
            raise ValueError("NAL length sizes differ")
        return AvcConfig(
            self.profile,
            self.compatibility,
            self.level,
            self.length_size,
            self.sps + other.sps,
            self.pps + other.pps,
            self.trailer,
        )


def free_id(config: AvcConfig) -> int:
    """The smallest parameter set id the source does not use (for our pieces)."""
    used = config.ids()
    for candidate in range(1, MAX_PARAMETER_SET_ID + 1):
        if candidate not in used:
            return candidate
    raise ValueError("the source uses every parameter set id")


def nal_units(sample: bytes, length_size: int) -> Iterator[bytes]:
    """The NAL units of one length-prefixed sample (as stored in MP4/MOV/MKV)."""
    pos = 0
    while pos + length_size <= len(sample):
        size = int.from_bytes(sample[pos : pos + length_size], "big")
        pos += length_size
        if size == 0 or pos + size > len(sample):
            raise ValueError("NAL unit length runs past the sample")
        yield sample[pos : pos + size]
        pos += size


def is_idr(sample: bytes, length_size: int) -> bool:
    """True if the sample holds an IDR slice (a point where decoding starts afresh)."""
    try:
        return any(unit[0] & 0x1F == NAL_IDR for unit in nal_units(sample, length_size))
    except ValueError:
        return False


class _Bits:
    """Exp-Golomb reading of a NAL payload, emulation-prevention bytes removed."""

    def __init__(self, payload: bytes) -> None:
        self.data = payload.replace(b"\x00\x00\x03", b"\x00\x00")
        self.pos = 0

    def bit(self) -> int:
        if self.pos >= 8 * len(self.data):
            raise ValueError("parameter set ends early")
        value = (self.data[self.pos // 8] >> (7 - self.pos % 8)) & 1
        self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        value = 1
        for _ in range(zeros):
            value = (value << 1) | self.bit()
        return value - 1

    def se(self) -> int:
        code = self.ue()
        return (code + 1) // 2 if code % 2 else -(code // 2)

    def skip_scaling_list(self, size: int) -> None:
        """A scaling_list() (7.3.2.1.1.1): deltas until one makes the next scale 0."""
        last = next_scale = 8
        for _ in range(size):
            if next_scale:
                next_scale = (last + self.se() + 256) % 256
            last = next_scale or last


def sps_id(unit: bytes) -> int:
    """seq_parameter_set_id: after the NAL header, profile, constraint flags and level."""
    if len(unit) < 5 or unit[0] & 0x1F != NAL_SPS:
        raise ValueError("not an SPS")
    return _Bits(unit[4:]).ue()


# Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
CHROMA_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})
MAX_POC_CYCLE = 255  # num_ref_frames_in_pic_order_cnt_cycle's limit


def frame_mbs_only(unit: bytes) -> bool:
    """frame_mbs_only_flag of an SPS: False when its pictures may be coded as fields
    (interlaced), each field with its own nal_ref_idc."""
    if len(unit) < 5 or unit[0] & 0x1F != NAL_SPS:
        raise ValueError("not an SPS")
    bits = _Bits(unit[4:])
    bits.ue()  # seq_parameter_set_id
    if unit[1] in CHROMA_PROFILES:
        chroma_format = bits.ue()
        if chroma_format == 3:
            bits.bit()  # separate_colour_plane_flag
        bits.ue(), bits.ue()  # bit depths
        bits.bit()  # qpprime_y_zero_transform_bypass_flag
        if bits.bit():  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format != 3 else 12):
                if bits.bit():
                    bits.skip_scaling_list(16 if i < 6 else 64)
    bits.ue()  # log2_max_frame_num_minus4
    poc_type = bits.ue()
    if poc_type == 0:
        bits.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        bits.bit(), bits.se(), bits.se()
        cycle = bits.ue()
        if cycle > MAX_POC_CYCLE:
            raise ValueError("bad picture order count cycle")
        for _ in range(cycle):
            bits.se()
    bits.ue()  # max_num_ref_frames
    bits.bit()  # gaps_in_frame_num_value_allowed_flag
    bits.ue(), bits.ue()  # width and height in macroblocks
    return bits.bit() == 1


def pps_ids(unit: bytes) -> tuple[int, int]:
    """(pic_parameter_set_id, the seq_parameter_set_id it refers to)."""
    if len(unit) < 2 or unit[0] & 0x1F != NAL_PPS:
        raise ValueError("not a PPS")
    bits = _Bits(unit[1:])
    return bits.ue(), bits.ue()
