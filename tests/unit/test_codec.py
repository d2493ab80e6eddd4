import random

import pytest

from raftkv import errors
from raftkv.protocol.codec import NEED_DATA, FrameDecoder, encode, pack

pytestmark = pytest.mark.timeout(30)

CASES = [None, 0, 2**64 - 1, -1, 1.5, "text", b"\x00\xff", [1, [2, b"x"]], {"op": "put", "pairs": [[1, b"v"]]}]


@pytest.mark.parametrize("obj", CASES)
def test_round_trip_byte_by_byte(obj):
    frame = encode(obj)
    dec = FrameDecoder()
    for i in range(len(frame) - 1):
        dec.receive_data(frame[i:i + 1])
        assert dec.next_message() is NEED_DATA
    dec.receive_data(frame[-1:])
    assert dec.next_message() == obj
    assert dec.buffered == 0


def test_many_frames_in_one_chunk():
    dec = FrameDecoder()
    dec.receive_data(b"".join(encode(i) for i in range(1000)))
    assert [dec.next_message() for _ in range(1000)] == list(range(1000))
    assert dec.next_message() is NEED_DATA


def test_oversized_frame_refused_before_body_arrives():
    dec = FrameDecoder(max_frame=100)
    dec.receive_data((101).to_bytes(4, "big"))
    with pytest.raises(errors.FrameTooLarge):
        dec.next_message()


def test_encode_refuses_what_peer_would_refuse():
    with pytest.raises(errors.LocalProtocolError):
        encode(b"x" * 200, max_frame=100)


@pytest.mark.parametrize("body", [b"\xc1", b"\x92\x01", b"\xd4\x01\x02"])  # reserved byte, short array, ext type
def test_malformed_or_extension_payload_is_a_protocol_error(body):
    dec = FrameDecoder()
    dec.receive_data(len(body).to_bytes(4, "big") + body)
    with pytest.raises(errors.RemoteProtocolError):
        dec.next_message()


def test_bytes_and_text_stay_distinct():
    dec = FrameDecoder()
    dec.receive_data(encode([b"a", "a"]))
    assert dec.next_message() == [b"a", "a"]
    assert pack(b"a") != pack("a")


def test_errors_round_trip_through_wire():
    err = errors.from_wire(errors.to_wire(errors.NotLeader("moved", leader="n2")))
    assert isinstance(err, errors.NotLeader) and err.leader == "n2" and err.retryable
    assert isinstance(errors.from_wire({"code": "nonsense"}), errors.RaftKVError)
    assert isinstance(errors.from_wire("junk"), errors.RemoteProtocolError)


def test_page_key_blob_round_trip():
    from raftkv.keys import encode_key
    from raftkv.protocol.pages import decode_raw_keys

    keys = [0, 1, 2**63, 2**64 - 1]
    assert decode_raw_keys(b"".join(b"k" + encode_key(k) for k in keys)) == keys
    assert decode_raw_keys(b"") == []
    # every byte position of a key lands where it belongs, whatever the tag byte holds
    rng = random.Random(7)
    many = [rng.getrandbits(64) for _ in range(1000)] + [0x0102030405060708, 0xFF000000000000FF]
    blob = b"".join(bytes([rng.getrandbits(8)]) + encode_key(k) for k in many)
    assert decode_raw_keys(blob) == many
    assert all(type(k) is int for k in decode_raw_keys(blob))
    with pytest.raises(ValueError):
        decode_raw_keys(b"k\x00\x00")
    # a list of small ints would slice and copy like bytes: refused, not decoded into keys
    with pytest.raises(ValueError):
        decode_raw_keys(list(blob))


@pytest.mark.parametrize("reply", [
    {"keys": [0] * 9, "values": [b"v"]},                       # keys not a blob
    {"keys": b"k" + bytes(8), "values": b"v"},                  # values not a list
    {"values": [b"v"]},                                         # no keys at all
    {"keys": b"k" + bytes(8), "values": [b"v", b"w"]},          # one key, two values
    {"keys": b"k" + bytes(7), "values": []},                    # not a whole record
])
def test_client_refuses_a_malformed_scan_page(reply):
    from raftkv.client.aio import _rows

    with pytest.raises(errors.RemoteProtocolError):
        _rows(reply)
    assert _rows({"keys": b"k" + bytes(7) + b"\x05", "values": [b"v"]}) == [(5, b"v")]
