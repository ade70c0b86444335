"""Seeds as the user gives them: one number in [0, MAX_SEED], or a list with ranges ('1,2,5-7').

A seed seeds `torch.Generator().manual_seed`, which takes 64-bit values; `mmfs.config.common.MAX_SEED`
keeps every seed a non-negative signed 64-bit integer (safetensors metadata, JSON).
"""

from __future__ import annotations

from mmfs.config.common import MAX_SEED
from mmfs.errors import OptionError

MAX_SEEDS = 10_000  # styles one `--seeds` may name: each is one output file per face


def check_seed(seed: int, field: str = "seed") -> int:
    """`seed` as an int, or an OptionError naming `field` when it is outside [0, MAX_SEED]."""
    if not 0 <= seed <= MAX_SEED:
        raise OptionError(field, f"must be in [0, 2**63 - 1], got {seed}")
    return int(seed)


def parse_seeds(text: str, field: str = "seeds") -> list[int]:
    """'1,2,5-7' -> [1, 2, 5, 6, 7] (order kept, duplicates dropped); an OptionError naming `field` otherwise."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        try:
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                if hi - lo >= MAX_SEEDS:
                    raise OptionError(field, f"range {part} has more than {MAX_SEEDS} seeds")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except OptionError:
            raise
        except ValueError:
            raise OptionError(field, f"{part!r} is not a seed or a range like 5-7") from None
    seeds = list(dict.fromkeys(seeds))
    if len(seeds) > MAX_SEEDS:
        raise OptionError(field, f"more than {MAX_SEEDS} seeds")
    for seed in seeds:
        check_seed(seed, field)
    return seeds
