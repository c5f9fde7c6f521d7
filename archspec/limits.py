"""Budgets that keep a CI runner safe from hostile specs; every one is checked before work is done."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1 << 20  # 1 MiB: the largest zoo spec is ~10 KB
    max_depth: int = 64  # YAML nesting levels
    max_yaml_nodes: int = 100_000
    max_expanded_nodes: int = 50_000  # items after blocks and repeats are expanded; ~1 s of checking
    max_block_depth: int = 24  # blocks invoking blocks; real networks use 2-4
    max_expr_steps: int = 200_000  # syntax nodes evaluated over the whole spec; the zoo takes at most 1,024 (ResNet-152)
    max_nesting: int = 32  # items inside items after expansion (groups, branches, blocks); ResNets use 4
    max_params: int = 10_000_000_000  # 40 GB of float32 weights
    max_macs: int = 10**14
    max_activation_bytes: int = 10**12

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self.flag(f.name)} must be a positive integer, got {value!r}")
            ceiling = CEILINGS.get(f.name)
            if ceiling is not None and value > ceiling:
                raise ValueError(f"{self.flag(f.name)} {value:,} is over {ceiling:,}, the most archspec's "
                                 "recursive stages (resolve, lower, the exporters) are tested to take")

    @staticmethod
    def flag(field_name: str) -> str:
        return "--" + field_name.replace("_", "-")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


# Nesting that the recursive stages are proven to handle within Python's default recursion limit
# (tests/test_reliability.py builds and exports a spec at each ceiling); raising a limit past its
# ceiling is refused rather than crashing later.
CEILINGS = {"max_depth": 128, "max_block_depth": 48, "max_nesting": 48}
