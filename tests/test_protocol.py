"""The serial protocol's bytes (pinned, as devices/PROTOCOL.md shows them), its messages, and
a decoder that survives any input (property-based)."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from physnn.hardware.protocol import (
    BROADCAST,
    MESSAGES,
    OVERHEAD,
    REPLY,
    Busy,
    Cap,
    Damaged,
    Err,
    ErrorReply,
    Fetch,
    FetchReply,
    Frame,
    FrameDecoder,
    Hello,
    HelloReply,
    Load,
    LoadReply,
    Msg,
    Open,
    ProtocolError,
    Restore,
    RestoreReply,
    Run,
    RunReply,
    Save,
    SaveReply,
    SpecReply,
    crc16,
    crc32,
    decode_payload,
    encode_frame,
    summarize,
)


def crc16_reference(data: bytes) -> int:
    """CRC-16/CCITT-FALSE straight from its definition (poly 0x1021, init 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc32_reference(data: bytes) -> int:
    """CRC-32/IEEE straight from its definition (reflected poly 0xEDB88320)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_checksums_are_the_standard_ones():
    assert crc16(b"123456789") == crc16_reference(b"123456789") == 0x29B1
    assert crc32(b"123456789") == crc32_reference(b"123456789") == 0xCBF43926


GOLDEN = [  # the frames PROTOCOL.md shows, byte for byte
    (Msg.HELLO, BROADCAST, 1, Hello(1000).pack(),
     "a5 5a 01 01 ff 00 01 00 04 00 b2 0c e8 03 00 00 4d 3d c1 aa"),
    (Msg.LOAD, 0, 2, Load(7, 0, 1, 0, struct.pack("<2f", 0.5, 1.0)).pack(),
     "a5 5a 01 03 00 00 02 00 15 00 70 93 07 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 3f "
     "00 00 80 3f 5c b8 f8 15"),
    (Msg.ERROR | REPLY, 0, 2, ErrorReply(Err.NOT_OPEN, "reset").pack(),
     "a5 5a 01 ff 00 00 02 00 07 00 92 8b 06 05 72 65 73 65 74 d7 4e 9c 52"),
    (Msg.BUSY | REPLY, 0, 3, b"", "a5 5a 01 fe 00 00 03 00 00 00 d0 dc bf da ae 38"),
    # the state transfer (Cap.STATE boards only): a blob of 4 bytes, CRC-32 0xB63CFBCD
    (Msg.SAVE, 0, 4, Save(0, 4096).pack(),
     "a5 5a 01 06 00 00 04 00 08 00 61 b8 00 00 00 00 00 10 00 00 54 c1 74 f0"),
    (Msg.SAVE | REPLY, 0, 4, SaveReply(60, 4, 0xB63CFBCD, 0, b"\x01\x02\x03\x04").pack(),
     "a5 5a 01 86 00 00 04 00 18 00 eb 10 3c 00 00 00 00 00 00 00 04 00 00 00 cd fb 3c b6 00 00 "
     "00 00 01 02 03 04 d1 f9 f7 23"),
    (Msg.RESTORE, 0, 5, Restore(60, 4, 0xB63CFBCD, 0, b"\x01\x02\x03\x04").pack(),
     "a5 5a 01 07 00 00 05 00 18 00 c7 75 3c 00 00 00 00 00 00 00 04 00 00 00 cd fb 3c b6 00 00 "
     "00 00 01 02 03 04 fc 8c d5 f4"),
    (Msg.RESTORE | REPLY, 0, 5, RestoreReply(4, 1, 60).pack(),
     "a5 5a 01 87 00 00 05 00 0d 00 b8 22 04 00 00 00 01 3c 00 00 00 00 00 00 00 a0 7c 0c 01"),
]


@pytest.mark.parametrize("typ, chan, seq, payload, hexbytes", GOLDEN)
def test_frames_are_byte_exact(typ, chan, seq, payload, hexbytes):
    raw = encode_frame(typ, chan, seq, payload)
    assert raw == bytes.fromhex(hexbytes)
    assert len(raw) == OVERHEAD + len(payload)
    assert int.from_bytes(raw[10:12], "little") == crc16_reference(raw[:10])
    assert int.from_bytes(raw[-4:], "little") == crc32_reference(raw[:-4])
    assert FrameDecoder().feed(raw) == [Frame(typ, chan, seq, payload)]


MESSAGE_EXAMPLES = [
    Hello(250),
    HelloReply(1, 255, 3, 15, 65535, 1 << 20, 0xDEADBEEF, "physnn-emulator sim:optical"),
    Open(74, 1001, 2**64 - 1, '{"camera_shape": [20, 20]}'),
    Open(0, None, 5, ""),
    Open(3, -7, 5, ""),
    SpecReply(20, 20, 0.0, 3.0, (0.0, 1.0, 2.0, 3.0), 1e-3, 2e-6, 123, "sim:microwave", "a.u."),
    SpecReply(74, 400, 0.0, 1.0, (), 0.01, 1e-5, 0, "sim:optical", "camera counts"),
    Load(1, 1, 2, 4, bytes(16)),
    LoadReply(1, 20),
    Run(9, 0, 1437, 0xFFFFFFFF),
    RunReply(9, 0x12345678, 2**40),
    Fetch(9, 100, 50),
    FetchReply(9, 100, b"\x01\x02\x03\x04"),
    Save(4096, 65515),
    SaveReply(2**40, 5120, 0xDEADBEEF, 4096, bytes(1024)),
    Restore(0, 0, 0, 0),
    Restore(123, 5120, 0x12345678, 4096, bytes(1024)),
    RestoreReply(5120, 1, 123),
    Busy(),
    ErrorReply(Err.DATA_CRC, "inputs do not match the CRC"),
]


@pytest.mark.parametrize("msg", MESSAGE_EXAMPLES, ids=lambda m: type(m).__name__)
def test_messages_round_trip_and_are_summarised(msg):
    frame = Frame(msg.TYPE, 3, 77, msg.pack())
    assert decode_payload(frame) == msg
    assert MESSAGES[msg.TYPE] is type(msg)
    assert summarize(frame).startswith(frame.name + " ch=3 seq=77")


def test_malformed_payloads_raise_protocol_errors():
    for cls in (Hello, HelloReply, Open, SpecReply, Load, LoadReply, Run, RunReply, Fetch,
                FetchReply, Save, SaveReply, Restore, RestoreReply, ErrorReply):
        with pytest.raises(ProtocolError):
            cls.unpack(b"\x01")
    with pytest.raises(ProtocolError, match="string"):
        ErrorReply.unpack(b"\x01\x09ab")  # the string claims 9 bytes
    with pytest.raises(ProtocolError, match="description"):
        Open.unpack(Open(1, None, 1, "x").pack() + b"extra")
    with pytest.raises(ProtocolError, match="unknown frame type"):
        decode_payload(Frame(0x42, 0, 0))
    assert issubclass(ProtocolError, ValueError)
    with pytest.raises(ProtocolError, match="exceeds"):
        encode_frame(Msg.LOAD, 0, 0, bytes(70000))
    with pytest.raises(ProtocolError, match="seq"):
        encode_frame(Msg.HELLO, 0, 70000)


def test_codes_are_pinned():
    """Boards in the field decode these numbers: a new message or capability takes a new one."""
    assert {m.name: int(m) for m in Msg} == {
        "HELLO": 1, "OPEN": 2, "LOAD": 3, "RUN": 4, "FETCH": 5, "SAVE": 6, "RESTORE": 7,
        "BUSY": 0x7E, "ERROR": 0x7F}
    assert {c.name: int(c) for c in Cap} == {
        "CONFIGURABLE": 1, "CHECKS_DESCRIPTION": 2, "BUSY": 4, "PERSISTENT": 8, "STATE": 16}


def test_damage_is_reported_with_the_request_it_hit_and_the_next_frame_survives():
    a = bytearray(encode_frame(Msg.RUN, 2, 41, Run(1, 0, 3, 99).pack()))
    b = encode_frame(Msg.FETCH, 2, 42, Fetch(1, 0, 3).pack())
    a[20] ^= 0x10  # payload
    d = FrameDecoder()
    out = d.feed(bytes(a) + b)
    assert out == [Damaged(Msg.RUN, 2, 41, len(a) - OVERHEAD), Frame(Msg.FETCH, 2, 42, b[12:-4])]
    header_hit = bytearray(a)
    header_hit[20] ^= 0x10
    header_hit[8] ^= 0xFF  # length: the header CRC rejects it before any wait
    d = FrameDecoder()
    assert d.feed(bytes(header_hit) + b) == [Frame(Msg.FETCH, 2, 42, b[12:-4])]
    assert d.stats.header_errors == 1 and d.pending == 0


def test_a_frame_split_anywhere_is_reassembled():
    raw = encode_frame(Msg.LOAD, 1, 5, Load(3, 0, 2, 0, bytes(range(40))).pack())
    for cut in range(1, len(raw)):
        d = FrameDecoder()
        assert d.feed(raw[:cut]) == []
        assert d.wanted() == len(raw) - cut or cut < 12  # before the header: a header's worth
        assert d.feed(raw[cut:]) == [Frame(Msg.LOAD, 1, 5, raw[12:-4])]


def test_oversized_lengths_are_refused_not_awaited():
    raw = encode_frame(Msg.FETCH | REPLY, 0, 1, bytes(300))
    d = FrameDecoder(max_payload=256)
    assert d.feed(raw) == [] and d.pending <= 1  # the length was never trusted
    with pytest.raises(ValueError, match="max_payload"):
        FrameDecoder(max_payload=70000)


# -- property-based: arbitrary bytes never break the decoder --------------------------------

MAX = 200
frames = st.builds(
    lambda t, c, s, p: Frame(t, c, s, p),
    st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF), st.binary(max_size=MAX),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@settings(max_examples=300, deadline=2000)
@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=20))
def test_arbitrary_bytes_never_crash_hang_or_grow_the_decoder(data, cuts):
    d = FrameDecoder(max_payload=MAX)
    for piece in chunked(data, cuts):
        for ev in d.feed(piece):
            assert isinstance(ev, Frame | Damaged)
        assert d.pending <= OVERHEAD + MAX
        assert d.wanted() >= 1


@settings(max_examples=300, deadline=2000)
@given(
    st.lists(st.tuples(st.binary(max_size=60), frames, st.integers(0, 40)), max_size=8),
    st.lists(st.integers(0, 5000), max_size=10),
)
def test_frames_hidden_in_garbage_and_truncated_frames_are_all_recovered(items, cuts):
    stream, sent = b"", []
    for garbage, frame, cut in items:
        raw = frame.encode()
        stream += garbage + raw[: cut % len(raw)]  # garbage, then a truncated copy
        stream += raw
        sent.append(frame)
    stream += bytes(OVERHEAD + MAX)  # lets a truncated frame's false length run out
    d = FrameDecoder(max_payload=MAX)
    got = [ev for piece in chunked(stream, cuts) for ev in d.feed(piece) if isinstance(ev, Frame)]
    assert got == sent
