#!/usr/bin/env python3
"""Regenerate the G.711 mu-law golden vectors from CPython's audioop (3.11 or 3.12).

Outputs, both next to this script:
  ulaw_decode_all.i16le   256 decode outputs: audioop.ulaw2lin(bytes(range(256)), 2),
                          as 16-bit little-endian samples, in input-byte order 0x00..0xFF.
  ulaw_encode_all.u8      65,536 encode outputs: audioop.lin2ulaw over every 16-bit sample
                          from -32768 to 32767 ascending (index i holds encode(i - 32768)).

Run:  python3 crates/mulaw/tests/data/generate_golden.py
"""
import array
import hashlib
import os
import sys
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # removed in Python 3.13

here = os.path.dirname(os.path.abspath(__file__))

decoded = array.array("h", audioop.ulaw2lin(bytes(range(256)), 2))
if sys.byteorder != "little":
    decoded.byteswap()
decode_bytes = decoded.tobytes()
assert len(decode_bytes) == 512

every_sample = array.array("h", range(-32768, 32768))
if sys.byteorder != "little":
    every_sample.byteswap()
encode_bytes = audioop.lin2ulaw(every_sample.tobytes(), 2)
assert len(encode_bytes) == 65536

for name, data in (("ulaw_decode_all.i16le", decode_bytes), ("ulaw_encode_all.u8", encode_bytes)):
    with open(os.path.join(here, name), "wb") as f:
        f.write(data)
    print(f"{name}: {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()} "
          f"(python {sys.version.split()[0]})")
