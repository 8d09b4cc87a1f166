"""A minimal ZIP writer with traditional PKWARE encryption ("ZipCrypto").

Python's ``zipfile`` reads ZipCrypto archives (``ZipFile.open(name, pwd=...)``) but cannot write
them, so the sandbox builds its password-protected exports here. ZipCrypto is weak (that is what
Mixpanel's exports use, not a recommendation). Members are DEFLATE-compressed, then encrypted.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Iterable
from datetime import datetime


def _crc_table() -> tuple[int, ...]:
    """The standard CRC-32 table (reflected polynomial 0xEDB88320), one entry per byte value."""
    table = []
    for n in range(256):
        for _ in range(8):
            n = (n >> 1) ^ 0xEDB88320 if n & 1 else n >> 1
        table.append(n)
    return tuple(table)


_CRC_TABLE = _crc_table()

_FLAG_ENCRYPTED = 0x0001
_FLAG_UTF8 = 0x0800
_METHOD_DEFLATE = 8
_VERSION = 20


class _Keys:
    """The three 32-bit keys of the PKWARE stream cipher (APPNOTE.TXT section 6.1)."""

    def __init__(self, password: bytes) -> None:
        self.k0, self.k1, self.k2 = 0x12345678, 0x23456789, 0x34567890
        for byte in password:
            self.update(byte)

    def update(self, byte: int) -> None:
        self.k0 = (self.k0 >> 8) ^ _CRC_TABLE[(self.k0 ^ byte) & 0xFF]
        self.k1 = ((self.k1 + (self.k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        self.k2 = (self.k2 >> 8) ^ _CRC_TABLE[(self.k2 ^ (self.k1 >> 24)) & 0xFF]

    def encrypt(self, data: bytes) -> bytes:
        out = bytearray(len(data))
        table = _CRC_TABLE
        k0, k1, k2 = self.k0, self.k1, self.k2
        for i, plain in enumerate(data):
            temp = (k2 | 2) & 0xFFFF
            out[i] = plain ^ (((temp * (temp ^ 1)) >> 8) & 0xFF)
            k0 = (k0 >> 8) ^ table[(k0 ^ plain) & 0xFF]
            k1 = ((k1 + (k0 & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
            k2 = (k2 >> 8) ^ table[(k2 ^ (k1 >> 24)) & 0xFF]
        self.k0, self.k1, self.k2 = k0, k1, k2
        return bytes(out)


def _dos_datetime(when: datetime) -> tuple[int, int]:
    year = max(when.year, 1980)
    dos_time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    dos_date = ((year - 1980) << 9) | (when.month << 5) | when.day
    return dos_time, dos_date


def build_zip(
    members: Iterable[tuple[str, bytes]],
    *,
    password: bytes | None = None,
    when: datetime | None = None,
    rng: random.Random | None = None,
) -> bytes:
    """A ZIP archive of ``(name, content)`` members, ZipCrypto-encrypted when ``password`` is set.

    ``rng`` feeds the 11 random bytes of each encryption header (seed it for reproducible output).
    """
    rng = rng or random.Random()  # noqa: S311 - header salt, not a secret
    dos_time, dos_date = _dos_datetime(when or datetime(2024, 1, 1))
    flags = _FLAG_UTF8 | (_FLAG_ENCRYPTED if password is not None else 0)
    body = bytearray()
    central = bytearray()
    count = 0
    for name, content in members:
        raw_name = name.encode("utf-8")
        crc = zlib.crc32(content) & 0xFFFFFFFF
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = compressor.compress(content) + compressor.flush()
        if password is not None:
            keys = _Keys(password)
            # 11 random bytes, then the CRC's high byte (readers check it to spot a wrong password).
            header = bytes(rng.getrandbits(8) for _ in range(11)) + bytes([crc >> 24])
            data = keys.encrypt(header) + keys.encrypt(data)
        offset = len(body)
        common = struct.pack(
            "<HHHHHIII",
            _VERSION,
            flags,
            _METHOD_DEFLATE,
            dos_time,
            dos_date,
            crc,
            len(data),
            len(content),
        )
        body += struct.pack("<I", 0x04034B50) + common + struct.pack("<HH", len(raw_name), 0)
        body += raw_name + data
        central += struct.pack("<IH", 0x02014B50, _VERSION) + common
        central += struct.pack("<HHHHHII", len(raw_name), 0, 0, 0, 0, 0, offset) + raw_name
        count += 1
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(body), 0)
    return bytes(body + central + end)
