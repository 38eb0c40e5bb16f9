"""Is a file of a run whole? Checks that find cut, torn or invalid files before anything uses them.

Every check returns None for a good file, or one short phrase saying what is wrong with it
("cut short: ...", "not valid JSON: ..."); the caller names the file and decides: redo the
round the file belongs to, or stop with the fix. Files a run depends on are also recorded
(size and SHA-256, `digest`) in their round's manifest, so a file cut exactly at a line
break, which still parses, is caught too.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: First and last line of a run's config.yaml: a file with the first line and without the last is cut short.
CONFIG_HEADER = "# star run configuration (resolved); it ends with the line '# end of configuration'\n"
CONFIG_END = "# end of configuration\n"

Record = dict[str, Any]  # {"bytes": int, "sha256": str}


def digest(path: Path, size: int | None = None) -> Record:
    """Size and SHA-256 of `path`'s first `size` bytes (None: the whole file)."""
    h, left = hashlib.sha256(), size
    with open(path, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            left = None if left is None else left - len(chunk)
    done = path.stat().st_size if size is None else size - (left or 0)
    return {"bytes": done, "sha256": h.hexdigest()}


def record_problem(path: Path, record: Record, prefix: bool = False, deep: bool = True) -> str | None:
    """Does `path` hold what `record` says (`prefix`: at least that, the recorded bytes first)?

    `deep` compares the SHA-256 too; without it only the size (cheap: for listing rounds).
    """
    if not path.is_file():
        return "missing"
    size, want = path.stat().st_size, int(record["bytes"])
    if size < want or (size > want and not prefix):
        return f"{size} bytes, where {want} were written" + (" (cut short)" if size < want else "")
    if deep and digest(path, want)["sha256"] != record["sha256"]:
        return "its content differs from what was written (SHA-256 mismatch)"
    return None


def json_problem(path: Path, required: Sequence[str] = ()) -> str | None:
    """`path` holds one JSON object with the `required` keys."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"not valid JSON (cut short or damaged): {e}"
    if not isinstance(data, dict):
        return f"holds a JSON {type(data).__name__}, not an object"
    missing = [k for k in required if k not in data]
    return f"lacks {', '.join(missing)}" if missing else None


def jsonl_problem(path: Path, required: Sequence[str] = ()) -> str | None:
    """Every line of `path` is a JSON object with the `required` keys, and the last line is ended."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "missing"
    except (OSError, UnicodeDecodeError) as e:
        return f"unreadable: {e}"
    if text and not text.endswith("\n"):
        return "cut short: its last line is not ended"
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            return f"line {number} is not valid JSON"
        if not isinstance(row, dict) or any(k not in row for k in required):
            return f"line {number} lacks one of {', '.join(required)}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """A whole safetensors file: an 8-byte header length, a JSON header, and the tensors' bytes to the end."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "cut short: no header"
            (length,) = struct.unpack("<Q", head)
            size = path.stat().st_size
            if length > size - 8:
                return "cut short: the header is incomplete"
            header = json.loads(f.read(length))
    except FileNotFoundError:
        return "missing"
    except (OSError, ValueError) as e:
        return f"damaged header: {e}"
    if not isinstance(header, dict):
        return "damaged header"
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    if 8 + length + max(ends, default=0) != size:
        return f"{size} bytes, where its header describes {8 + length + max(ends, default=0)} (cut short or damaged)"
    return None


def adapter_problem(folder: Path) -> str | None:
    """A saved adapter: whole weights (safetensors) and a readable adapter_config.json; the first problem."""
    for name, check in (("adapter_model.safetensors", safetensors_problem), ("adapter_config.json", json_problem)):
        if (problem := check(folder / name)) is not None:
            return f"{name}: {problem}"
    return None


def wrap_config(text: str) -> str:
    """A run's config.yaml text: the resolved config between `CONFIG_HEADER` and `CONFIG_END`."""
    return CONFIG_HEADER + text + ("" if text.endswith("\n") else "\n") + CONFIG_END


def config_problem(text: str) -> str | None:
    """Is a run's config.yaml whole? Files written before the end line existed carry no header: kept as they are."""
    if not text.strip() or CONFIG_HEADER.startswith(text):
        return "empty or cut short"
    if text.startswith(CONFIG_HEADER) and not (text.endswith((CONFIG_END, CONFIG_END.rstrip("\n")))):
        return f"cut short: its last line {CONFIG_END.strip()!r} is missing"
    return None
