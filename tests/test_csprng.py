"""The AES-256-CTR random generator of the key relay (``qbb.csprng``)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from qbb import csprng
from qbb.csprng import REKEY_BYTES, CtrDrbg, random_bytes


def fixed_entropy(seed: int):
    """A deterministic entropy source (tests only)."""
    state = {"n": 0}

    def entropy(n: int) -> bytes:
        state["n"] += 1
        return bytes((seed + state["n"] + i) & 0xFF for i in range(n))
    return entropy


def test_lengths_and_freshness() -> None:
    assert random_bytes(0) == b""
    outputs = [random_bytes(n) for n in (1, 15, 16, 17, 57344, 100_000)]
    assert [len(x) for x in outputs] == [1, 15, 16, 17, 57344, 100_000]
    assert len({random_bytes(32) for _ in range(100)}) == 100
    with pytest.raises(ValueError):
        random_bytes(-1)


def test_output_is_the_aes256_ctr_keystream_of_the_seed() -> None:
    """Known-answer: the stream is AES-256-CTR under key = seed[:32] from V = seed[32:] + 1."""
    generator = CtrDrbg(entropy=fixed_entropy(7))
    seed = fixed_entropy(7)(48)  # the first (and only) entropy call, XORed into zeros
    start = (int.from_bytes(seed[32:], "big") + 1).to_bytes(16, "big")
    expected = Cipher(algorithms.AES(seed[:32]), modes.CTR(start)).encryptor().update(bytes(1000))
    assert generator.generate(300) + generator.generate(700) == expected


def test_state_update_after_rekey_bytes() -> None:
    """After REKEY_BYTES the key comes from the keystream: the output leaves the old stream."""
    a, b = CtrDrbg(entropy=fixed_entropy(1)), CtrDrbg(entropy=fixed_entropy(1), rekey_bytes=1 << 40)
    assert a.generate(REKEY_BYTES) == b.generate(REKEY_BYTES)  # same seed, same stream
    assert a.generate(4096) != b.generate(4096)  # a updated its state, b did not


def test_bits_look_random() -> None:
    data = random_bytes(1 << 16)
    ones = sum(bin(byte).count("1") for byte in data)
    assert abs(ones - 4 * len(data)) < 6 * (2 * len(data)) ** 0.5  # 6 sigma
    assert len(set(data)) == 256


def test_reseed_after_fork_and_repr_hides_state() -> None:
    generator = CtrDrbg()
    assert "reseeds=1" in repr(generator) and "key" not in repr(generator).lower()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not repeat the parent's stream
        os.close(read)
        os.write(write, generator.generate(32))
        os._exit(0)
    os.close(write)
    child = os.read(read, 32)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32 and child != generator.generate(32)


def test_reseed_interval(monkeypatch) -> None:
    monkeypatch.setattr(csprng, "RESEED_INTERVAL", 2)
    generator = CtrDrbg(rekey_bytes=64)
    for _ in range(6):
        generator.generate(64)
    assert generator.reseeds >= 3


def test_bad_entropy_source() -> None:
    with pytest.raises(ValueError):
        CtrDrbg(entropy=lambda n: b"short")


def test_draw_keys_matches_random_key() -> None:
    """A batch of keys from one draw is what random_key makes from the same bytes."""
    from qbb.relay import draw_keys, random_key
    source = bytes(range(256)) * 300
    for bits in (13, 64, 65535):
        nbytes = (bits + 7) // 8
        keys = draw_keys(bits, 3, lambda n: source[:n])
        assert keys == [random_key(bits, lambda n, i=i: source[i * nbytes:(i + 1) * nbytes])
                        for i in range(3)]
        assert all(len(k) == nbytes and not k[-1] & ((1 << (-bits % 8)) - 1) for k in keys)
    assert draw_keys(13, 2, lambda n: b"\xff" * n) == [b"\xff\xf8", b"\xff\xf8"]
