"""Budgets that keep a CI runner safe from hostile specs; every one is checked before work is done."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int = 1 << 20  # 1 MiB: the largest zoo spec is ~10 KB
    max_depth: int = 64  # YAML nesting levels
    max_yaml_nodes: int = 100_000
    max_expanded_nodes: int = 100_000  # items after blocks and repeats are expanded
    max_block_depth: int = 24  # blocks invoking blocks; real networks use 2-4
    max_params: int = 10_000_000_000  # 40 GB of float32 weights
    max_macs: int = 10**14
    max_activation_bytes: int = 10**12

    @staticmethod
    def flag(field_name: str) -> str:
        return "--" + field_name.replace("_", "-")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
