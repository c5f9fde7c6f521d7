"""Writes the checkpoint cases of the hostile corpus (tests/hostile/checkpoints/, listed in its
MANIFEST.tsv) against tests/hostile/checkpoints/tiny.yaml. Run once; the files are committed.

    .venv/bin/python tools/make_hostile_checkpoints.py
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

import archspec

HERE = Path(__file__).resolve().parent.parent / "tests" / "hostile" / "checkpoints"


class RunsCode:
    """Unpickling this calls open('PWNED_by_pickle', 'w'): harmless, and visible if it ever ran."""

    def __reduce__(self):
        return (open, ("PWNED_by_pickle", "w"))


def main() -> None:
    good = {k: v.clone() for k, v in archspec.build(HERE / "tiny.yaml", seed=0).state_dict().items()}
    # a state dict whose pickle would run code, in torch.save's zip format and as a bare pickle
    torch.save({"conv.weight": good["conv.weight"], "payload": RunsCode()}, HERE / "pickle_runs_code.pth")
    (HERE / "pickle_runs_code_bare.pt").write_bytes(pickle.dumps(RunsCode(), protocol=2))
    # a whole pickled module: weights_only refuses its classes too
    torch.save(archspec.build(HERE / "tiny.yaml", seed=0), HERE / "pickled_module.pt")
    arrays = {k: v.numpy() for k, v in good.items()}
    archspec.weights.write_weights(HERE / "wrong_shape.safetensors", {**arrays, "fc.weight": np.zeros((3, 4), np.float32)})
    archspec.weights.write_weights(HERE / "missing_key.safetensors", {k: v for k, v in arrays.items() if k != "fc.bias"})
    archspec.weights.write_weights(HERE / "extra_key.safetensors", {**arrays, "head.weight": np.zeros((2, 4), np.float32)})
    nan = arrays["conv.weight"].copy()
    nan[0, 0, 0, 0] = np.nan
    archspec.weights.write_weights(HERE / "nan.safetensors", {**arrays, "conv.weight": nan})
    transposed = dict(good, **{"fc.weight": good["fc.weight"].t().contiguous()})
    torch.save(transposed, HERE / "transposed.pth")
    archspec.weights.write_weights(HERE / "_full.safetensors", arrays)
    full = (HERE / "_full.safetensors").read_bytes()
    (HERE / "_full.safetensors").unlink()
    (HERE / "truncated.safetensors").write_bytes(full[: len(full) - 20])
    (HERE / "not_a_checkpoint.pt").write_bytes(b"# a README renamed .pt\nnothing to see here\n")
    # a header claiming a 4 TB tensor: refused before anything is allocated
    header = b'{"fc.weight":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,8]}}'
    (HERE / "huge_claim.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
    with zipfile.ZipFile(HERE / "object_array.npz", "w") as zf:  # np.savez of an object array: a pickle inside
        with zf.open("fc.weight.npy", "w") as fh:
            np.lib.format.write_array(fh, np.array([RunsCode()], dtype=object), allow_pickle=True)


if __name__ == "__main__":
    main()
