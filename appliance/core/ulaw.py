"""G.711 µ-law (`ulaw_8000`, the telephony format of the ElevenLabs protocol), pure Python.

Both directions go through tables built once: 256 entries to decode, 65,536 to encode (one
per 16-bit sample value), so a 100 ms chunk at 8 kHz is one table lookup per sample. Samples are
signed 16-bit little-endian (`s16le`) on the PCM side, as everywhere in the protocol.
"""

from __future__ import annotations

import functools
import sys
from array import array

_BIAS = 0x84
_CLIP_14 = 8159
_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _encode_sample(sample: int) -> int:
    """The CCITT/Sun reference (`st_14linear2ulaw`, as in CPython's audioop) on the top 14 bits."""
    value = sample >> 2
    mask = 0x7F if value < 0 else 0xFF
    value = min(-value if value < 0 else value, _CLIP_14) + (_BIAS >> 2)
    segment = next((i for i, end in enumerate(_SEG_END) if value <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def _decode_byte(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + _BIAS) << exponent
    magnitude -= _BIAS
    return -magnitude if code & 0x80 else magnitude


@functools.cache
def _decode_table() -> tuple[int, ...]:
    return tuple(_decode_byte(code) for code in range(256))


@functools.cache
def _encode_table() -> bytes:
    """Index: the sample as an unsigned 16-bit value (two's complement)."""
    return bytes(_encode_sample(u - 65536 if u >= 32768 else u) for u in range(65536))


def _samples(pcm: bytes) -> array[int]:
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
    samples = array("h", pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def ulaw_to_pcm16(data: bytes) -> bytes:
    """µ-law bytes to s16le PCM (two bytes per input byte)."""
    table = _decode_table()
    samples = array("h", (table[code] for code in data))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def pcm16_to_ulaw(pcm: bytes) -> bytes:
    """s16le PCM to µ-law bytes (one byte per sample)."""
    table = _encode_table()
    return bytes(table[s & 0xFFFF] for s in _samples(pcm))
