# The C scanner (_native.c), built where a compiler and OpenSSL's headers are (setup.py).

def bulk(
    buf: bytes,
    p: int,
    q: int,
    expect: int,
    prev: bytes,
    seen: dict[bytes, bytes],
    first: dict[bytes, bytes],
    hashes: bytearray,
    /,
) -> tuple[int, int, bytes | None, int]: ...
def levels(start: int, hashes: bytes | bytearray, /) -> list[tuple[int, bytes]]: ...
