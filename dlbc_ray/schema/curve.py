"""Which 64-hex-digit strings are Ed25519 public keys: points on the curve (RFC 8032 decoding).

Pure arithmetic, so the wire types can refuse a key nobody could ever sign for while they
parse, without importing the signing code (``crypto`` sits above ``schema``).
"""

from __future__ import annotations

from functools import lru_cache

PUBLIC_KEY_HEX_LEN = 64

# Ed25519's curve: -x^2 + y^2 = 1 + d x^2 y^2 over GF(2^255 - 19) (RFC 8032, section 5.1.3).
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


@lru_cache(maxsize=16_384)
def is_public_key(value: str) -> bool:
    """True when ``value`` is 64 hex digits encoding a point on Ed25519's curve (RFC 8032 decoding).

    OpenSSL accepts any 32 bytes as a public key; funds sent to a string that is not a
    point could never be spent, so the wire types refuse it.
    """
    if len(value) != PUBLIC_KEY_HEX_LEN:
        return False
    try:
        raw = int.from_bytes(bytes.fromhex(value), "little")
    except ValueError:
        return False
    y, sign_bit = raw & ((1 << 255) - 1), raw >> 255
    if y >= _P:
        return False
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = (u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P)) % _P
    if (v * x * x - u) % _P != 0:
        x = (x * _SQRT_M1) % _P
        if (v * x * x - u) % _P != 0:
            return False
    return not (x == 0 and sign_bit == 1)
