"""ANS in numpy: constriction's bits, entropy targets, the spec's reference decoder, lanes,
rejects."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deep_compression.coding import ans, ans_lanes
from deep_compression.coding.bits import decode_varint
from deep_compression.coding.streams import entropy_bits
from deep_compression.errors import FormatError


def spec_decode(segment: bytes, n: int, alphabet: int) -> list[int]:
    """docs/FORMAT.md section 6.3 in plain Python integers and IEEE doubles."""
    m, pos = decode_varint(segment, 0, "ref")
    counts = []
    for _ in range(m):
        c, pos = decode_varint(segment, pos, "ref")
        counts.append(c)
    K = max(alphabet, 2)
    counts += [0] * (K - m)
    scale = float((1 << 24) - K) / float(sum(counts))
    cdf, prefix = [], 0
    for i, c in enumerate(counts):
        cdf.append(int(float(prefix) * scale) + i)
        prefix += c
    cdf.append(1 << 24)
    words = [int.from_bytes(segment[i : i + 4], "little") for i in range(pos, len(segment), 4)]
    state = 0
    if words:
        state = words.pop()
        while words and state < 1 << 32:
            state = (state << 32) | words.pop()
    out = []
    for _ in range(n):
        q = state & ((1 << 24) - 1)
        s = max(i for i in range(K) if cdf[i] <= q)
        state = (state >> 24) * (cdf[s + 1] - cdf[s]) + (q - cdf[s])
        if state < 1 << 32 and words:
            state = (state << 32) | words.pop()
        out.append(s)
    assert state == 0 and not words
    return out


@given(st.integers(1, 30), st.integers(0, 800), st.floats(0.05, 3.0), st.integers(0, 2**31))
@settings(max_examples=60, deadline=None)
def test_round_trip_and_spec_decoder(alphabet: int, n: int, conc: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    symbols = rng.choice(alphabet, size=n, p=rng.dirichlet(np.full(alphabet, conc)))
    seg = ans.encode_stream(symbols, alphabet)
    assert ans.decode_stream(seg, n, alphabet, "t").tolist() == symbols.tolist()
    if n:
        assert spec_decode(seg, n, alphabet) == symbols.tolist()


def test_within_one_percent_of_entropy_and_no_one_bit_floor() -> None:
    rng = np.random.default_rng(0)
    layer = np.clip(np.round(rng.normal(15.5, 6.0, size=200_000)), 0, 31).astype(int)
    skewed = (rng.random(200_000) < 0.95).astype(int)
    for symbols, alphabet in ((layer, 32), (skewed, 2)):
        bits = 8 * len(ans.encode_stream(symbols, alphabet)) / symbols.size
        h = entropy_bits(np.bincount(symbols))
        assert h <= bits <= 1.01 * h


def test_rejects() -> None:
    symbols = np.array([0, 1, 1, 2, 1, 0, 2, 2, 2])
    seg = ans.encode_stream(symbols, 3)
    with pytest.raises(FormatError, match="sum to 9"):
        ans.decode_stream(seg, 8, 3, "t")
    with pytest.raises(FormatError, match="whole number of words"):
        ans.decode_stream(seg + b"\x01", 9, 3, "t")
    with pytest.raises(FormatError, match="invalid ANS data"):
        ans.decode_stream(seg + b"\x00\x00\x00\x00", 9, 3, "t")
    with pytest.raises(FormatError, match="does not end"):
        ans.decode_stream(seg + b"\x07\x00\x00\x00", 9, 3, "t")
    with pytest.raises(FormatError, match="zero count"):
        ans.decode_stream(bytes([2, 5, 0]), 5, 3, "t")
    with pytest.raises(FormatError, match="outside"):
        ans.decode_stream(bytes([4, 1, 1, 1, 1]), 4, 3, "t")


@given(st.integers(1, 40), st.integers(1, 3000), st.floats(0.05, 3.0), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_same_bits_as_constriction(alphabet: int, n: int, conc: float, seed: int) -> None:
    """One lane is byte for byte what constriction (the version-1 writer) produced."""
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(seed)
    symbols = rng.choice(alphabet, size=n, p=rng.dirichlet(np.full(alphabet, conc)))
    counts = np.bincount(symbols, minlength=alphabet)
    probs = np.zeros(max(alphabet, 2))
    probs[:alphabet] = counts
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(
        symbols.astype(np.int32), constriction.stream.model.Categorical(probs, perfect=False)
    )
    seg = ans.encode_stream(symbols, alphabet)
    m, pos = decode_varint(seg, 0, "t")
    for _ in range(m):
        _, pos = decode_varint(seg, pos, "t")
    assert seg[pos:] == coder.get_compressed().astype("<u4").tobytes()


@pytest.mark.parametrize("chunk", [1, 5, 64, 1000])
def test_lanes_round_trip_and_match_single_lanes(chunk: int) -> None:
    """Lanes decode in lockstep (>= 8 lanes) or one by one; each lane is a version-1 stream
    of its own symbols under the whole stream's model."""
    rng = np.random.default_rng(chunk)
    symbols = rng.choice(12, size=3000, p=rng.dirichlet(np.full(12, 0.4)))
    seg = ans.encode_stream(symbols, 12, chunk)
    assert ans.decode_stream(seg, symbols.size, 12, "t", chunk).tolist() == symbols.tolist()
    cdf = ans.model(np.bincount(symbols, minlength=12), 12).tolist()
    lanes = [
        ans_lanes.encode_lane(symbols[i : i + chunk].tolist(), cdf) for i in range(0, 3000, chunk)
    ]
    assert seg.endswith(b"".join(np.asarray(w, "<u4").tobytes() for w in lanes))
    with pytest.raises(FormatError):
        ans.decode_stream(seg + b"\x05\x00\x00\x00", symbols.size, 12, "t", chunk)


def test_decoding_imports_neither_constriction_nor_torch(tmp_path) -> None:
    """An ANS file decodes in a process where ``import constriction`` and ``import torch``
    fail, to the same arrays."""
    import subprocess
    import sys

    from deep_compression.dcz import DenseTensor, QuantizedTensor, decode, to_bytes

    rng = np.random.default_rng(0)
    pos = np.flatnonzero(rng.random(5000) < 0.1)
    rec = QuantizedTensor(
        "w", (50, 100), pos, rng.integers(0, 16, pos.size), rng.normal(size=16), 5
    )
    path = tmp_path / "a.dcz"
    path.write_bytes(to_bytes([rec, DenseTensor("b", np.ones(3, np.float32))], {}, coder="ans"))
    expected = decode(path)[0]["w"]
    np.save(tmp_path / "w.npy", expected)
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("constriction", "torch"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
import numpy as np
from deep_compression.dcz import decode, open_dcz
f = open_dcz({str(path)!r})
assert {{s.coder for t in f.tensors for s in t.streams.values()}} == {{"ans"}}
arrays, _ = decode({str(path)!r})
assert np.array_equal(arrays["w"], np.load({str(tmp_path / "w.npy")!r}))
assert "constriction" not in sys.modules and "torch" not in sys.modules
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_batch_of_streams_is_byte_for_byte_the_streams_one_by_one() -> None:
    """encode_streams / decode_streams run every lane of a file in one lockstep; the bytes
    are those of encode_stream per stream, and the symbols come back."""
    rng = np.random.default_rng(3)
    streams = [
        (rng.choice(a, size=n, p=rng.dirichlet(np.ones(a))), a)
        for a, n in [(3, 500), (40, 1), (2, 7000), (17, 0), (300, 2000)]
    ]
    for chunk in (7, 100, 5000):
        batch = ans.encode_streams(streams, chunk)
        assert batch == [ans.encode_stream(s, a, chunk) for s, a in streams]
        parsed = [
            ans.parse_stream(seg, s.size, a, "t", chunk) for seg, (s, a) in zip(batch, streams)
        ]
        for got, (s, _) in zip(ans.decode_streams(parsed), streams):
            assert got.tolist() == s.tolist()
