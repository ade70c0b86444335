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
from dataclasses import dataclass
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


# --- keys and shapes, read from the pickle's opcodes (nothing is constructed or imported)


class _Global(str):
    """A class or function the pickle names (`module.name`), kept as its name only."""


class _Call:
    """What a REDUCE / NEWOBJ would have built: the callable's name, its arguments, any items set on it."""

    def __init__(self, func: object, args: object) -> None:
        self.func, self.args = str(func), args
        self.items: dict = {}


class _Storage(tuple):
    """A persistent id: torch's `('storage', type, key, location, numel)` for a tensor's bytes."""


_TENSOR_REBUILDS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor")
_DICT_CALLS = ("collections.OrderedDict", "builtins.dict")
# Bytes per element of torch's typed storages (the storage type names torch.save writes).
_STORAGE_BYTES = {
    "FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
}  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """The keys of a torch.save file and the shape of every tensor in it, with no code run to learn them.

    `tensors` maps each tensor's path of dict keys, joined with dots (`G_ema_model.encoder.0.0.weight`),
    to its shape. `missing` lists tensors whose bytes are absent or short in the archive (a truncated
    or damaged file).
    """

    keys: tuple[str, ...]
    tensors: dict[str, tuple[int, ...]]
    missing: tuple[str, ...] = ()


def tensor_layout(path: str | os.PathLike[str]) -> Layout | None:
    """The `Layout` of a torch.save zip (None for any other container, or a pickle this reader cannot follow)."""
    path = Path(path)
    if container(path) != "torch" or not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl")), None)
        if pkl is None:
            return None
        root = pkl[: -len("data.pkl")]
        sizes = {n[len(root) + len("data/") :]: zf.getinfo(n).file_size for n in names if n.startswith(root + "data/")}
        try:
            obj = _symbolic_load(zf.read(pkl))
        except (ValueError, IndexError, KeyError, TypeError):
            return None
    top = _as_dict(obj)
    if top is None:
        return Layout((), {})
    tensors: dict[str, tuple[int, ...]] = {}
    missing: list[str] = []
    try:
        _collect(top, "", tensors, missing, sizes)
    except (ValueError, TypeError, IndexError):  # a tensor record whose offset, shape or storage is not numbers
        return None
    return Layout(tuple(str(k) for k in top), tensors, tuple(missing))


def _as_dict(obj: object) -> dict | None:
    """A pickled dict or OrderedDict as a dict; None for anything else."""
    if isinstance(obj, _Call) and obj.func in _DICT_CALLS:
        return obj.items
    return obj if isinstance(obj, dict) else None


def _collect(obj: object, prefix: str, tensors: dict, missing: list, sizes: dict[str, int]) -> None:
    items = _as_dict(obj)
    if items is None:
        return
    for key, value in items.items():
        name = f"{prefix}{key}"
        tensor = _tensor(value)
        if tensor is not None:
            storage, offset, shape = tensor
            tensors[name] = shape
            if not _storage_complete(storage, offset, shape, sizes):
                missing.append(name)
        else:
            _collect(value, name + ".", tensors, missing, sizes)


def _tensor(value: object) -> tuple[_Storage, int, tuple[int, ...]] | None:
    """(storage, offset, shape) of a pickled tensor or parameter, else None."""
    if isinstance(value, _Call) and value.func == "torch._utils._rebuild_parameter":
        value = value.args[0] if value.args else None
    if not isinstance(value, _Call) or value.func not in _TENSOR_REBUILDS or len(value.args) < 3:
        return None
    storage, offset, shape = value.args[:3]
    if not isinstance(storage, _Storage) or not isinstance(shape, tuple):
        return None
    return storage, int(offset), tuple(int(s) for s in shape)


def _storage_complete(storage: _Storage, offset: int, shape: tuple[int, ...], sizes: dict[str, int]) -> bool:
    """The storage's bytes are in the archive, at least as many as the tensor reads."""
    if len(storage) < 5 or str(storage[2]) not in sizes:
        return False
    itemsize = _STORAGE_BYTES.get(str(storage[1]).rsplit(".", 1)[-1])
    if itemsize is None:
        return True  # an untyped or unusual storage: its presence is all that can be checked
    numel = 1
    for s in shape:
        numel *= s
    return sizes[str(storage[2])] >= int(storage[4]) * itemsize >= (offset + numel) * itemsize * (numel > 0)


def _symbolic_load(blob: bytes) -> object:
    """Follow a pickle's opcodes with a stack of plain values: globals stay names, calls stay records."""
    stack: list = []
    marks: list[int] = []
    memo: dict[int, object] = {}

    def pop_mark() -> list:
        start = marks.pop()
        items = stack[start:]
        del stack[start:]
        return items

    for op, arg, _pos in pickletools.genops(blob):
        name = op.name
        if name in ("PROTO", "FRAME"):
            continue
        if name == "STOP":
            break
        if name == "MARK":
            marks.append(len(stack))
        elif name in ("EMPTY_DICT", "EMPTY_LIST"):
            stack.append({} if name == "EMPTY_DICT" else [])
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "TUPLE":
            stack.append(tuple(pop_mark()))
        elif name == "LIST":
            stack.append(pop_mark())
        elif name == "DICT":
            items = pop_mark()
            stack.append(dict(zip(items[::2], items[1::2], strict=True)))
        elif name in ("SETITEM", "SETITEMS"):
            items = stack[-2:] if name == "SETITEM" else pop_mark()
            if name == "SETITEM":
                del stack[-2:]
            target = stack[-1]
            target = target.items if isinstance(target, _Call) else target
            for key, value in zip(items[::2], items[1::2], strict=True):
                target[key if not isinstance(key, (dict, list)) else str(key)] = value
        elif name in ("APPEND", "APPENDS"):
            items = [stack.pop()] if name == "APPEND" else pop_mark()
            if isinstance(stack[-1], list):
                stack[-1].extend(items)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[int(arg)])
        elif name in ("GLOBAL", "INST"):
            stack.append(_Global(str(arg).replace(" ", ".")))
        elif name == "STACK_GLOBAL":
            module, attr = stack[-2:]
            del stack[-2:]
            stack.append(_Global(f"{module}.{attr}"))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop()
            stack.append(_Call(stack.pop(), args))
        elif name == "BUILD":
            stack.pop()  # an object's state: not needed for keys and shapes
        elif name in ("BINPERSID", "PERSID"):
            pid = stack.pop() if name == "BINPERSID" else arg
            stack.append(_Storage(pid if isinstance(pid, tuple) else (pid,)))
        elif name == "POP":
            stack.pop()
        elif name == "POP_MARK":
            pop_mark()
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
            stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
        elif op.arg is not None and name not in ("EXT1", "EXT2", "EXT4"):
            stack.append(arg)  # ints, floats, strings, bytes: the opcode's own argument
        else:
            raise ValueError(f"pickle opcode {name} is not followed")
    return stack[-1] if stack else None
