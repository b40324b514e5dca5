"""The H.264 bitstream helpers the smart render relies on (pure, on real x264 bytes)."""

from __future__ import annotations

import pytest

from spooler.h264 import AvcConfig, free_id, is_idr, nal_units, pps_ids, sps_id

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
