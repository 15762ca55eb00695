# The writer's C builder (_batch.c), built where a compiler and OpenSSL's headers are (setup.py).

def leaves(
    fields: list[tuple[str | None, ...]],
    refs: list[str | None],
    start: int,
    prev: bytes,
    time_ms: int,
    node: str,
    prev_subjects: list[int | None],
    frontier: list[tuple[int, int, bytes]],
    stratum: int,
    /,
) -> (
    tuple[
        list[bytes],
        list[bytes],
        list[tuple[int, int, bytes]],
        list[tuple[int, int, bytes]],
        bytes,
        bytes,
    ]
    | None
): ...
