"""What a weight file that mmfs did not write holds, found without executing it.

A downloaded `.pt`/`.pth` is a pickle: loading it may run code. To name the file in an error message
(an upstream PyTorch file to convert, a TorchScript archive, a pickle holding Python objects), this
module only reads bytes: the container (a torch zip with `data.pkl`, a TorchScript zip with `code/`,
torch's legacy pickle stream, a plain pickle) and the classes and functions the pickle would import,
listed by walking its opcodes with `pickletools`, which never constructs anything.
"""

from __future__ import annotations

import os
import pickletools
import zipfile
from pathlib import Path

# What torch.save writes around plain tensors: the globals a weights-only load allows anyway.
_TENSOR_GLOBALS = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset", "_codecs.encode")
# Legacy torch.save: magic number, protocol version, system info, then the object (storages follow).
_LEGACY_PICKLES = 4
_PICKLE_PROTO = 0x80


def container(path: str | os.PathLike[str]) -> str | None:
    """'torchscript', 'torch' (a torch.save zip or legacy stream), 'pickle' (pickle.dump), or None (other)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
            if any(n.split("/")[-2:-1] == ["code"] or n.endswith("/constants.pkl") for n in names):
                return "torchscript"
            return "torch" if any(n.endswith("data.pkl") for n in names) else None
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return None
    if len(head) < 2 or head[0] != _PICKLE_PROTO or not 2 <= head[1] <= 5:
        return None
    pickles = _pickles(path)
    # torch's legacy stream starts with its magic number (a long) and has several pickles back to back.
    return "torch" if len(pickles) >= _LEGACY_PICKLES else "pickle"


def python_objects(path: str | os.PathLike[str]) -> list[str]:
    """The classes and functions (other than tensor plumbing) the file's pickle would import, in order."""
    path = Path(path)
    kind = container(path)
    if kind in ("torch", "torchscript") and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            data = [zf.read(n) for n in zf.namelist() if n.endswith("data.pkl")]
    elif kind in ("torch", "pickle"):
        data = _pickles(path)
    else:
        return []
    found: dict[str, None] = {}
    for blob in data:
        for name in _globals(blob):
            if not name.startswith(_TENSOR_GLOBALS):
                found[name] = None
    return list(found)


def _pickles(path: Path) -> list[bytes]:
    """The pickles at the start of a file, back to back (at most the legacy torch header's count).

    Read opcode by opcode up to each STOP, so a legacy torch file's tensor data after them is never read.
    """
    out: list[bytes] = []
    with open(path, "rb") as fh:
        while len(out) < _LEGACY_PICKLES:
            start = fh.tell()
            if fh.read(1) != bytes([_PICKLE_PROTO]):
                break
            fh.seek(start)
            try:
                if not any(op.name == "STOP" for op, _arg, _pos in pickletools.genops(fh)):
                    break
            except ValueError:  # truncated, or not a pickle after all
                break
            end = fh.tell()
            fh.seek(start)
            out.append(fh.read(end - start))
    return out


def _globals(blob: bytes) -> list[str]:
    """`module.name` of every GLOBAL / STACK_GLOBAL / INST opcode; STACK_GLOBAL's strings are followed through the memo."""
    names: list[str] = []
    strings: list[str] = []  # string pushes seen so far, for STACK_GLOBAL (protocol 4+)
    memo: dict[int, str] = {}
    memo_count = 0  # MEMOIZE stores the top of the stack under the next free index
    top_is_string = False
    try:
        for op, arg, _pos in pickletools.genops(blob):
            pushed_string = False
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(str(arg))
                pushed_string = True
            elif op.name == "MEMOIZE":
                if top_is_string:
                    memo[memo_count] = strings[-1]
                memo_count += 1
                pushed_string = top_is_string
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT"):
                if top_is_string:
                    memo[int(arg)] = strings[-1]
                pushed_string = top_is_string
            elif op.name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                strings.append(memo[int(arg)])
                pushed_string = True
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            top_is_string = pushed_string
    except ValueError:  # a truncated pickle: report what was seen
        pass
    return names


def convert_hint(path: str | os.PathLike[str]) -> str | None:
    """For a file that is not a safetensors checkpoint: what it is and what to run, or None if unrecognised."""
    import shlex

    path = Path(path)
    kind = container(path)
    if kind == "torchscript":
        return (
            f"{path}: is a TorchScript archive (a compiled model such as OpenAI's CLIP), not an mmfs checkpoint; "
            "mmfs convert reads rosinality StyleGAN2 and official MMFS .pt/.pth files"
        )
    if kind in ("torch", "pickle"):
        named = " named .safetensors" if path.suffix == ".safetensors" else ""
        target = path.with_name(f"{path.stem}{'-converted' if named else ''}.safetensors")  # never the input's name
        return (
            f"{path}: is an upstream PyTorch file{named}, not an mmfs checkpoint; convert it first: "
            f"mmfs convert {shlex.quote(str(path))} {shlex.quote(str(target))}"
        )
    return None
