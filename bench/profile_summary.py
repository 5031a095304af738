"""Summarize py-spy's collapsed stacks (``py-spy record --format raw``) as text.

Prints where the samples are: by library (the frame closest to the leaf that belongs to a
known library or to citykey's own packages), then the functions with the most inclusive and
the most self samples. Run: .venv/bin/python bench/profile_summary.py profile.txt [--top 25]
"""

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

BUCKETS = (
    ("idle (event loop waiting)", ("selectors", "uvloop", "epoll", "base_events.py")),
    ("sqlalchemy", ("sqlalchemy/",)),
    ("asyncpg", ("asyncpg/",)),
    ("mqtt (aiomqtt/paho)", ("aiomqtt/", "paho/")),
    ("jwt/crypto", ("jwt/", "cryptography/", "joserfc/", "authlib/")),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("fastapi/starlette", ("fastapi/", "starlette/")),
    ("uvicorn/httptools", ("uvicorn/", "httptools/")),
    ("citykey api", ("api/",)),
    ("citykey protocol", ("citykey_protocol/",)),
    ("asyncio", ("asyncio/",)),
)


def parse(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """(frames root first as (function, file), samples) per collapsed line."""
    stacks = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            match = _FRAME.match(raw)
            frames.append((match["func"], match["file"]) if match else (raw, ""))
        stacks.append((frames, int(count)))
    return stacks


def bucket(frames: list[tuple[str, str]]) -> str:
    """The library of the innermost frame that belongs to one; "other" otherwise."""
    for func, file in reversed(frames):
        where = f"{file} {func}"
        for name, needles in BUCKETS:
            if any(needle in where for needle in needles):
                return name
    return "other"


def summarize(text: str, top: int = 20) -> list[str]:
    """The summary as lines."""
    stacks = parse(text)
    total = sum(count for _, count in stacks) or 1
    by_bucket: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    for frames, count in stacks:
        by_bucket[bucket(frames)] += count
        seen = set()
        for func, file in frames:
            key = f"{func} ({_short(file)})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
        if frames:
            func, file = frames[-1]
            self_time[f"{func} ({_short(file)})"] += count
    lines = [f"{total} samples", "", "by library (innermost known frame):"]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in by_bucket.most_common()]
    lines += ["", f"top {top} inclusive, citykey's own functions:"]
    lines += [
        f"  {n / total:6.1%}  {key}"
        for key, n in inclusive.most_common()
        if "(api/" in key or "(citykey_protocol/" in key
    ][:top]
    lines += ["", f"top {top} self:"]
    lines += [f"  {n / total:6.1%}  {key}" for key, n in self_time.most_common(top)]
    return lines


def _short(file: str) -> str:
    return file.split("site-packages/")[-1].split("/work/main/")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args()
    print("\n".join(summarize(args.profile.read_text(), args.top)))


if __name__ == "__main__":
    main()
