"""The H.264 bitstream helpers the smart render relies on (pure, on real x264 bytes)."""

from __future__ import annotations

import pytest

from spooler.h264 import AvcConfig, frame_mbs_only, free_id, is_idr, nal_units, pps_ids, sps_id

# avcC records from x264 (High profile, 13 = level 1.3): parameter set ids 0, and 1 (sps-id=1).
SOURCE = bytes.fromhex(
    "0164000dffe100196764000dacd94141fb0110000003001000000303c0f142996001000668ebe3cb22c0"
)
OURS = bytes.fromhex(
    "0164000dffe100196764000d4b3650507ec044000003000400000300f03c50a658010006684abe3cb22cfdf8f800"
)


def test_parse_and_write_back_byte_for_byte() -> None:
    config = AvcConfig.parse(SOURCE)
    assert (config.profile, config.level, config.length_size) == (100, 13, 4)
    assert len(config.sps) == len(config.pps) == 1
    assert config.to_bytes() == SOURCE


def test_ids_and_a_free_one() -> None:
    source, ours = AvcConfig.parse(SOURCE), AvcConfig.parse(OURS)
    assert sps_id(source.sps[0]) == 0 and pps_ids(source.pps[0]) == (0, 0)
    assert sps_id(ours.sps[0]) == 1 and pps_ids(ours.pps[0]) == (1, 1)
    assert free_id(source) == 1
    assert free_id(source.joined(ours)) == 2


def test_joined_lists_both_sets_and_refuses_a_clash() -> None:
    joined = AvcConfig.parse(SOURCE).joined(AvcConfig.parse(OURS))
    again = AvcConfig.parse(joined.to_bytes())
    assert again == joined and again.ids() == {0, 1}
    with pytest.raises(ValueError, match="defined twice"):
        AvcConfig.parse(SOURCE).joined(AvcConfig.parse(SOURCE))


@pytest.mark.parametrize(
    "data", [b"", b"\x00\x00\x00\x01gd", SOURCE[:12], bytes([1]) + SOURCE[1:8] + b"\xff" * 4]
)
def test_malformed_records_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        AvcConfig.parse(data)


def test_idr_detection_on_length_prefixed_samples() -> None:
    idr = (3).to_bytes(4, "big") + bytes([0x65, 0x88, 0x84])
    sei_then_slice = (2).to_bytes(4, "big") + b"\x06\x05" + (2).to_bytes(4, "big") + b"\x41\x9a"
    assert is_idr(idr, 4)
    assert not is_idr(sei_then_slice, 4)
    assert [u[0] & 0x1F for u in nal_units(sei_then_slice, 4)] == [6, 1]
    assert not is_idr(b"\x00\x00\x00\x09\x65", 4)  # a length past the end: not trusted


# More avcC records from x264 (64x64 testsrc2): Main profile, progressive and `interlaced=1`
# (MBAFF); High with `cqm=jvt` (x264 sets no scaling list in the SPS: the hand-made SPS
# below has some); Baseline (picture order count type 2).
MAIN = bytes.fromhex("014d400affe10017674d400aeca2136022000003000200000300641e244b2c01000468ce0fc8")
INTERLACED = bytes.fromhex(
    "014d4015ffe10017674d4015eca226c044000003000400000300c87c50a65801000468de0fc8"
)
MATRICES = bytes.fromhex(
    "0164000affe100186764000aacd94426c044000003000400000300c83c48965801000568ce0fc40cfdf8f800"
)
BASELINE = bytes.fromhex(
    "0142c00affe100166742c00ada109b011000000300100000030320f1226a01000468ce0fc8"
)


@pytest.mark.parametrize(
    ("record", "progressive"),
    [(SOURCE, True), (OURS, True), (MAIN, True), (INTERLACED, False), (MATRICES, True),
     (BASELINE, True)],
)  # fmt: skip
def test_frame_mbs_only_is_read_through_every_sps_layout(record: bytes, progressive: bool) -> None:
    assert frame_mbs_only(AvcConfig.parse(record).sps[0]) is progressive


def _ue(value: int) -> str:
    code = bin(value + 1)[2:]
    return "0" * (len(code) - 1) + code


def _se(value: int) -> str:
    return _ue(2 * value - 1 if value > 0 else -2 * value)


def _high_sps_with_matrices(progressive: bool) -> bytes:
    """A High-profile SPS carrying scaling lists (x264 puts its own in the PPS): a full
    4x4 list of 16 deltas, and an 8x8 one cut short by a delta that makes the next scale 0."""
    bits = _ue(0) + _ue(1) + _ue(0) + _ue(0) + "0"  # id, 4:2:0, 8-bit, no bypass
    bits += "1"  # seq_scaling_matrix_present_flag
    lists = {0: [_se(1)] * 16, 6: [_se(4), _se(-2), _se(-10)]}
    for i in range(8):
        bits += "1" + "".join(lists[i]) if i in lists else "0"
    bits += _ue(0) + _ue(0) + _ue(0)  # frame_num bits, POC type 0, POC lsb bits
    bits += _ue(1) + "0" + _ue(3) + _ue(3)  # one reference, no gaps, 64x64
    bits += ("1" if progressive else "0") + "1"  # frame_mbs_only_flag, then any flag
    bits += "1" + "0" * (-(len(bits) + 1) % 8)  # the stop bit
    payload = int(bits, 2).to_bytes(len(bits) // 8, "big")
    assert b"\x00\x00" not in payload  # no emulation prevention needed
    return bytes([0x67, 100, 0, 10]) + payload


def test_frame_mbs_only_skips_the_sps_scaling_lists() -> None:
    assert frame_mbs_only(_high_sps_with_matrices(progressive=True)) is True
    assert frame_mbs_only(_high_sps_with_matrices(progressive=False)) is False


def test_a_truncated_sps_raises_value_error() -> None:
    sps = AvcConfig.parse(MATRICES).sps[0]
    with pytest.raises(ValueError):
        frame_mbs_only(sps[:6])
    with pytest.raises(ValueError):
        frame_mbs_only(AvcConfig.parse(MATRICES).pps[0])
