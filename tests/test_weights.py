"""Weights files (archspec.weights): safetensors/npz/state-dict round trips, the hostile checkpoint
corpus, and `archspec weights import` against hand-written models with torchvision's layout and
key names (tests/torchvision_like.py), whose outputs the imported spec must reproduce."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import archspec
from archspec.cli import main
from archspec.weights import WeightsError, import_checkpoint, read_metadata, read_weights, write_weights

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torchvision_like as tv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "hostile" / "checkpoints"
TOLERANCE = 1e-5  # relative to max(1, max|reference|), the export's parity criterion


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a - b| / max(1, max|a|)"""
    return float((a - b).abs().max()) / max(1.0, float(a.abs().max()))


# -- the hostile checkpoint corpus ---------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    file: str
    command: str
    message: str
    what: str


CASES = [Case(*line.split("\t")) for line in (CORPUS / "MANIFEST.tsv").read_text().splitlines()
         if line.strip() and not line.startswith("#")]


def test_manifest_lists_every_checkpoint_file():
    files = {p.name for p in CORPUS.iterdir()} - {"MANIFEST.tsv", "tiny.yaml"}
    assert files == {c.file for c in CASES}
    assert all(c.command in ("import", "fit") for c in CASES)
    assert all((CORPUS / c.file).stat().st_size < 16 * 1024 for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.command}-{c.file}")
def test_hostile_checkpoint_is_refused(case: Case, tmp_path: Path, monkeypatch, capsys):
    shutil.copy2(CORPUS / "tiny.yaml", tmp_path)
    shutil.copy2(CORPUS / case.file, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    if case.command == "import":
        code = main(["weights", "import", "tiny.yaml", case.file, "-o", "out.safetensors"])
    else:
        code = main(["export", "tiny.yaml", "-o", "out.onnx", "--weights", case.file])
    out, err = capsys.readouterr()
    assert code == 1, (out, err)
    assert err.startswith("archspec: error: ") and case.message in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before, "a file was written (or code ran)"


def test_pickle_payload_would_really_run_code(tmp_path: Path, monkeypatch):
    """The corpus' pickle is a live one: plain unpickling does create the marker file, so its refusal
    above is the loader's doing."""
    import pickle

    monkeypatch.chdir(tmp_path)
    pickle.loads((CORPUS / "pickle_runs_code_bare.pt").read_bytes()).close()
    assert (tmp_path / "PWNED_by_pickle").exists()


# -- reading and writing --------------------------------------------------------------------------

def test_safetensors_round_trip_with_spec_hash(tmp_path: Path):
    report = archspec.check(CORPUS / "tiny.yaml")
    module = archspec.build(report, seed=3)
    module.bn.running_mean.uniform_()
    module.bn.num_batches_tracked.fill_(7)
    archspec.save_weights(module, tmp_path / "w.safetensors")
    state = read_weights(tmp_path / "w.safetensors")
    assert set(state) == set(module.state_dict())
    for k, v in module.state_dict().items():
        assert state[k].shape == tuple(v.shape) and state[k].dtype == v.numpy().dtype
        assert np.array_equal(state[k], v.numpy()), k
    assert read_metadata(tmp_path / "w.safetensors") == {"archspec.spec": "tiny", "archspec.spec_sha256": report.graph.sha256}
    again = archspec.build(report, seed=0, weights=tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values()))


def test_npz_and_state_dict_and_mapping_load_alike(tmp_path: Path):
    module = archspec.build(CORPUS / "tiny.yaml", seed=5)
    sd = module.state_dict()
    np.savez(tmp_path / "w.npz", **{k: v.numpy() for k, v in sd.items()})
    torch.save(sd, tmp_path / "w.pt")
    for source in (tmp_path / "w.npz", tmp_path / "w.pt", sd, {k: v.numpy() for k, v in sd.items()}):
        loaded = archspec.build(CORPUS / "tiny.yaml", seed=0, weights=source).state_dict()
        assert all(torch.equal(sd[k], loaded[k]) for k in sd), source


def test_checkpoint_wrapped_by_a_training_loop_is_unwrapped(tmp_path: Path):
    sd = archspec.build(CORPUS / "tiny.yaml", seed=5).state_dict()
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ckpt.pth")
    assert list(read_weights(tmp_path / "ckpt.pth")) == list(sd)


@pytest.mark.parametrize("length", [0x80 + 0x100 * 36, 0x280])
def test_safetensors_whose_header_length_starts_like_a_pickle(length: int, tmp_path: Path):
    """A header of 0x2480 bytes (vgg16_bn's, imported) starts the file with 0x80, a pickle's PROTO
    opcode; one of 0x280 bytes even with PROTO 2. Both are safetensors, read as such."""
    sd = archspec.build(CORPUS / "tiny.yaml", seed=2).state_dict()
    for pad in range(length):  # metadata that brings the JSON header to exactly `length` bytes
        write_weights(tmp_path / "w.safetensors", sd, {"pad": "x" * pad})
        if int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little") == length:
            break
    assert (tmp_path / "w.safetensors").read_bytes()[:1] == b"\x80"
    state = read_weights(tmp_path / "w.safetensors")
    assert all(np.array_equal(state[k], v.numpy()) for k, v in sd.items())
    result = import_checkpoint(archspec.check(CORPUS / "tiny.yaml"), tmp_path / "w.safetensors")
    assert all(np.array_equal(result.tensors[k], v.numpy()) for k, v in sd.items())


def test_reading_safetensors_needs_no_torch(tmp_path: Path):
    write_weights(tmp_path / "w.safetensors", {"a.weight": np.arange(6, dtype=np.float32).reshape(2, 3)})
    code = ("import sys; sys.modules['torch'] = None\n"
            "from archspec.weights import read_weights\n"
            f"w = read_weights({str(tmp_path / 'w.safetensors')!r})\n"
            "assert w['a.weight'].tolist() == [[0, 1, 2], [3, 4, 5]], w\n"
            "assert not [m for m in sys.modules if m.startswith('torch') and sys.modules[m] is not None]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# -- importing torchvision-layout checkpoints -------------------------------------------------------

@pytest.mark.parametrize("spec,make", [
    ("resnet18", tv.resnet18), ("alexnet", tv.AlexNet), ("vgg11_bn", tv.vgg11_bn),
    pytest.param("resnet50", tv.resnet50, marks=pytest.mark.slow),
])
def test_import_reproduces_the_torchvision_layout_model(spec: str, make, tmp_path: Path, capsys):
    reference = tv.randomized(make())
    torch.save(reference.state_dict(), tmp_path / f"{spec}.pth")
    code = main(["weights", "import", str(ROOT / "specs" / f"{spec}.yaml"), str(tmp_path / f"{spec}.pth"),
                 "-o", str(tmp_path / "w.safetensors")])
    assert code == 0, capsys.readouterr()
    model = archspec.build(ROOT / "specs" / f"{spec}.yaml", weights=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert close(reference(x), model(x)) <= TOLERANCE
    # every tensor, buffers and BatchNorm step counters included, came across in module order
    ours, theirs = model.state_dict(), reference.state_dict()
    assert len(ours) == len(theirs)
    assert all(torch.equal(a, b) for a, b in zip(ours.values(), theirs.values()))


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["convnext_tiny", "vit_b_16"])
def test_import_pairs_tensors_held_directly_by_a_module_by_name(spec: str, tmp_path: Path, capsys):
    """torchvision's ConvNeXt `layer_scale` and ViT `class_token`/`encoder.pos_embedding` are parameters
    of a module with submodules, so state_dict lists them first; the spec holds each where it is
    used."""
    reference = tv.randomized({"convnext_tiny": tv.ConvNeXtTiny, "vit_b_16": tv.ViTB16}[spec]())
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    code = main(["weights", "import", str(ROOT / "specs" / f"{spec}.yaml"), str(tmp_path / "tv.pth"), "-o",
                 str(tmp_path / "w.safetensors")])
    out = capsys.readouterr().out
    assert code == 0, out
    held = {"convnext_tiny": "18 tensors held directly by a module with submodules",
            "vit_b_16": "2 tensors held directly by a module with submodules"}[spec]
    assert held in out and ("features.1.0.layer_scale -> stage1.block0.layer_scale.scale" in out if spec == "convnext_tiny"
                            else "class_token -> class_token.token, encoder.pos_embedding -> pos_embedding.embedding.weight" in out)
    model = archspec.build(ROOT / "specs" / f"{spec}.yaml", weights=tmp_path / "w.safetensors").eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert close(reference(x), model(x)) <= TOLERANCE
    ours, theirs = model.state_dict(), reference.state_dict()
    moved = ({"stage1.block0.layer_scale.scale": "features.1.0.layer_scale",
              "stage4.block2.layer_scale.scale": "features.7.2.layer_scale"} if spec == "convnext_tiny" else
             {"class_token.token": "class_token", "pos_embedding.embedding.weight": "encoder.pos_embedding"})
    assert all(torch.equal(ours[a], theirs[b]) for a, b in moved.items())


def test_a_held_tensor_the_spec_does_not_name_is_refused(tmp_path: Path):
    """A module's own tensor that no spec layer is named after is not moved: the order diverges."""
    sd = tv.randomized(tv.resnet18()).state_dict()
    odd = OrderedDict([("layer1.0.scale", sd["layer1.0.bn2.weight"].clone())])
    odd.update(sd)
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="at tensor #0 .* shapes differ"):
        archspec.load_weights(ROOT / "specs/resnet18.yaml", tmp_path / "odd.pth")


def test_resnet34_into_resnet18_is_refused_side_by_side(tmp_path: Path, capsys):
    torch.save(tv.resnet34().state_dict(), tmp_path / "r34.pth")
    code = main(["weights", "import", str(ROOT / "specs/resnet18.yaml"), str(tmp_path / "r34.pth"), "-o",
                 str(tmp_path / "w.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "w.safetensors").exists()
    assert "onto spec 'resnet18': at tensor #25 (num_batches_tracked aside) shapes differ: (128, 64, 3, 3) in the spec, " \
           "(64, 64, 3, 3) in the checkpoint" in err
    marked = [line for line in err.splitlines() if line.lstrip().startswith(">")]
    assert len(marked) == 1
    assert marked[0].split() == [">", "25", "layer2.block0.conv1.weight", "(128,", "64,", "3,", "3)", "|",
                                 "layer1.2.conv1.weight", "(64,", "64,", "3,", "3)"]


def test_transposed_tensor_is_refused(tmp_path: Path):
    sd = tv.resnet18().state_dict()
    sd["fc.weight"] = sd["fc.weight"].t().contiguous()
    torch.save(sd, tmp_path / "t.pth")
    with pytest.raises(WeightsError, match=r"at tensor #100 .*\(1000, 512\) in the spec, \(512, 1000\) in the "
                                           r"checkpoint \(the checkpoint's is transposed\)"):
        archspec.load_weights(ROOT / "specs/resnet18.yaml", tmp_path / "t.pth")


def test_same_shaped_tensors_in_another_order_are_refused(tmp_path: Path):
    """running_mean and running_var have one shape: pairing them by position would be a guess."""
    sd = archspec.build(CORPUS / "tiny.yaml").state_dict()
    keys = list(sd)
    i, j = keys.index("bn.running_mean"), keys.index("bn.running_var")
    keys[i], keys[j] = keys[j], keys[i]
    torch.save(OrderedDict((f"m.{k}", sd[k]) for k in keys), tmp_path / "swapped.pth")
    with pytest.raises(WeightsError, match="same shape, but 'running_mean' in the spec and 'running_var' in the "
                                           "checkpoint: the order is ambiguous"):
        archspec.load_weights(CORPUS / "tiny.yaml", tmp_path / "swapped.pth")


def test_swapped_same_shaped_sibling_modules_are_refused_side_by_side(tmp_path: Path, capsys):
    """layer1.0's conv2/bn2 stored before conv1/bn1 (declared in another order than they run): every
    shape still lines up in order, but the names say the pairing would cross conv1 with conv2."""
    sd = tv.randomized(tv.resnet18()).state_dict()
    block = [k for k in sd if k.startswith("layer1.0.")]
    first, second = [k for k in block if ".conv1." in k or ".bn1." in k], [k for k in block if ".conv2." in k or ".bn2." in k]
    at = list(sd).index(block[0])
    order = list(sd)[:at] + second + first + list(sd)[at + len(block):]
    assert sorted(order) == sorted(sd) and order != list(sd)
    torch.save(OrderedDict((k, sd[k]) for k in order), tmp_path / "swapped.pth")
    code = main(["weights", "import", str(ROOT / "specs/resnet18.yaml"), str(tmp_path / "swapped.pth"), "-o",
                 str(tmp_path / "w.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "w.safetensors").exists()
    assert ("at tensor #5 (num_batches_tracked aside) same shapes, but the names disagree: the order pairs the "
            "spec's 'layer1.block0.conv1' with the checkpoint's 'layer1.0.conv2', and the checkpoint's "
            "'layer1.0.conv1' holds tensors of the same shapes") in err
    marked = [line for line in err.splitlines() if line.lstrip().startswith(">")]
    assert len(marked) == 1 and marked[0].split() == [">", "5", "layer1.block0.conv1.weight", "(64,", "64,", "3,", "3)",
                                                      "|", "layer1.0.conv2.weight", "(64,", "64,", "3,", "3)"]
    assert "Traceback" not in err
    # in the order the module runs, the same tensors import and reproduce the model
    torch.save(sd, tmp_path / "ordered.pth")
    assert main(["weights", "import", str(ROOT / "specs/resnet18.yaml"), str(tmp_path / "ordered.pth"), "-o",
                 str(tmp_path / "w.safetensors")]) == 0


def test_swapped_siblings_named_only_on_the_spec_side_are_refused(tmp_path: Path):
    """The checkpoint's module is named like a same-shaped sibling in the spec: also a contradiction."""
    sd = tv.randomized(tv.resnet18()).state_dict()
    renamed = OrderedDict((k.replace("layer1.0.conv1.", "layer1.0.conv2.", 1) if k.startswith("layer1.0.conv1.")
                           else k.replace("layer1.0.conv2.", "layer1.0.convb.", 1), v) for k, v in sd.items())
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError, match=r"at tensor #5 .*the order pairs the spec's 'layer1.block0.conv1' with the "
                                           r"checkpoint's 'layer1.0.conv2', and the spec's 'layer1.block0.conv2' holds"):
        archspec.load_weights(ROOT / "specs/resnet18.yaml", tmp_path / "renamed.pth")


def test_module_boundaries_must_correspond(tmp_path: Path):
    sd = archspec.build(CORPUS / "tiny.yaml").state_dict()
    renamed = OrderedDict((k.replace("bn.bias", "other.bias"), v) for k, v in sd.items())
    torch.save(renamed, tmp_path / "split.pth")
    with pytest.raises(WeightsError, match="a module boundary falls differently"):
        archspec.load_weights(CORPUS / "tiny.yaml", tmp_path / "split.pth")


def test_num_batches_tracked_absent_from_the_checkpoint_is_zero(tmp_path: Path):
    reference = tv.randomized(tv.resnet18())
    torch.save(OrderedDict((k, v) for k, v in reference.state_dict().items() if "num_batches" not in k),
               tmp_path / "old.pth")
    report = archspec.check(ROOT / "specs/resnet18.yaml")
    result = import_checkpoint(report, tmp_path / "old.pth")
    counters = [k for k in result.tensors if k.endswith("num_batches_tracked")]
    assert len(counters) == 20 and all(result.tensors[k].shape == () and result.tensors[k] == 0 for k in counters)
    assert any("20 num_batches_tracked counters are not in the checkpoint; set to 0" in n for n in result.notes)


def test_map_file_ignores_and_pairs_what_order_cannot(tmp_path: Path, capsys):
    spec = ROOT / "specs/resnet18.yaml"
    sd = tv.randomized(tv.resnet18()).state_dict()
    # an auxiliary head the spec does not have, and the classifier stored first
    odd = OrderedDict([("fc.weight", sd["fc.weight"]), ("fc.bias", sd["fc.bias"]),
                       ("aux.fc.weight", torch.zeros(10, 512))])
    odd.update((k, v) for k, v in sd.items() if not k.startswith("fc."))
    torch.save(odd, tmp_path / "odd.pth")
    with pytest.raises(WeightsError, match="at tensor #0"):
        archspec.load_weights(spec, tmp_path / "odd.pth")
    (tmp_path / "map.yaml").write_text("map: {fc: fc}\nignore: ['aux.*']\n")
    code = main(["weights", "import", str(spec), str(tmp_path / "odd.pth"), "-o", str(tmp_path / "w.safetensors"),
                 "--map", str(tmp_path / "map.yaml")])
    out = capsys.readouterr().out
    assert code == 0 and "ignored 1 checkpoint tensors as the map says (aux.fc.weight)" in out
    w = read_weights(tmp_path / "w.safetensors")
    assert all(np.array_equal(w[a], sd[b].numpy()) for a, b in [("fc.weight", "fc.weight"), ("conv1.weight", "conv1.weight"),
                                                               ("layer4.block1.bn2.running_var", "layer4.1.bn2.running_var")])


def test_map_file_mistakes_are_located(tmp_path: Path, capsys):
    (tmp_path / "map.yaml").write_text("map: {fc: fc}\nignor: ['aux.*']\n")
    torch.save(tv.resnet18().state_dict(), tmp_path / "r.pth")
    code = main(["weights", "import", str(ROOT / "specs/resnet18.yaml"), str(tmp_path / "r.pth"), "-o",
                 str(tmp_path / "w.safetensors"), "--map", str(tmp_path / "map.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and f"{tmp_path / 'map.yaml'}:2:1: error[AS101]: unknown key 'ignor'" in err
    assert "did you mean 'ignore'?" in err
    (tmp_path / "map.yaml").write_text("map: {fcc: fc}\n")
    with pytest.raises(WeightsError, match="the map names spec key 'fcc', which the spec does not have; did you mean 'fc"):
        archspec.load_weights(ROOT / "specs/resnet18.yaml", tmp_path / "r.pth", mapping=tmp_path / "map.yaml")


def test_safetensors_checkpoint_pairs_in_natural_key_order(tmp_path: Path):
    """safetensors does not keep module order: AlexNet's keys sort into it, ResNet's do not, and
    that is refused with a pointer to the .pth, never guessed."""
    reference = tv.randomized(tv.AlexNet())
    write_weights(tmp_path / "alexnet.safetensors", reference.state_dict())
    tensors = archspec.load_weights(ROOT / "specs/alexnet.yaml", tmp_path / "alexnet.safetensors")
    model = archspec.build(ROOT / "specs/alexnet.yaml", weights=tensors).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert close(reference(x), model(x)) <= TOLERANCE
    write_weights(tmp_path / "r18.safetensors", tv.resnet18().state_dict())
    with pytest.raises(WeightsError, match=r"import the PyTorch \(\.pth\) file, which keeps module order"):
        archspec.load_weights(ROOT / "specs/resnet18.yaml", tmp_path / "r18.safetensors")


def test_build_cli_writes_safetensors_that_export_notes_when_the_spec_changed(tmp_path: Path, capsys):
    from archspec.weights import sidecar_note

    spec = tmp_path / "tiny.yaml"
    shutil.copy2(CORPUS / "tiny.yaml", spec)
    assert main(["build", str(spec), "-o", str(tmp_path / "w.safetensors")]) == 0
    report = archspec.check(spec)
    assert read_metadata(tmp_path / "w.safetensors")["archspec.spec_sha256"] == report.graph.sha256
    assert sidecar_note(tmp_path / "w.safetensors", "tiny", report.graph.sha256) == []
    note = sidecar_note(tmp_path / "w.safetensors", "tiny", "0" * 64)
    assert len(note) == 1 and note[0].startswith("w.safetensors was saved for spec 'tiny' with a different sha256")


# -- archspec summary --weights FILE ----------------------------------------------------------------

def test_summary_weights_reports_the_file_against_the_spec(tmp_path: Path, capsys):
    spec = ROOT / "specs/resnet18.yaml"
    module = archspec.build(spec, seed=1)
    archspec.save_weights(module, tmp_path / "w.safetensors")
    state = module.state_dict()  # the oracle: torch's own count of the module's tensors
    values, size = sum(t.numel() for t in state.values()), sum(t.numel() * t.element_size() for t in state.values())
    floats = sum(t.is_floating_point() for t in state.values())
    assert main(["summary", str(spec), "--depth", "0", "--weights", str(tmp_path / "w.safetensors")]) == 0
    out = capsys.readouterr().out
    assert (f"weights {tmp_path / 'w.safetensors'} match spec 'resnet18': {len(state)} tensors, the whole state dict "
            f"(names and shapes equal, values finite); {values:,} values, {size:,} bytes: float32 x{floats}, "
            f"int64 x{len(state) - floats}") in out
    assert (len(state), floats, values) == (122, 102, 11_699_132)
    assert main(["summary", str(spec), "--format", "json", "--weights", str(tmp_path / "w.safetensors")]) == 0
    report = json.loads(capsys.readouterr().out)["weights"]
    assert report == {"path": str(tmp_path / "w.safetensors"), "matches": True, "tensors": 122, "values": values,
                      "bytes": size, "dtypes": {"float32": floats, "int64": len(state) - floats}, "notes": []}


def test_summary_weights_refuses_a_file_that_does_not_fit(tmp_path: Path, capsys):
    archspec.save_weights(archspec.build(ROOT / "specs/resnet18.yaml"), tmp_path / "r18.safetensors")
    code = main(["summary", str(ROOT / "specs/resnet34.yaml"), "--weights", str(tmp_path / "r18.safetensors")])
    err = capsys.readouterr().err
    r34 = archspec.build(ROOT / "specs/resnet34.yaml", device="meta").state_dict()
    r18 = archspec.build(ROOT / "specs/resnet18.yaml", device="meta").state_dict()
    missing = [k for k in r34 if k not in r18]
    assert code == 1 and err.startswith(f"archspec: error: weights {tmp_path / 'r18.safetensors'} do not fit the module "
                                        f"built from spec 'resnet34': missing {len(missing)}: {missing[0]}, ")
    assert "Traceback" not in err
    # a torchvision checkpoint: names missing and names unexpected, so the message points at `weights import`
    torch.save(tv.resnet18().state_dict(), tmp_path / "tv.pth")
    assert main(["summary", str(ROOT / "specs/resnet18.yaml"), "--weights", str(tmp_path / "tv.pth")]) == 1
    assert ("names differ from the spec's: for a torchvision or timm checkpoint, map it with "
            "`archspec weights import SPEC tv.pth -o w.safetensors`") in capsys.readouterr().err


def test_summary_weights_reads_safetensors_without_torch(tmp_path: Path):
    archspec.save_weights(archspec.build(CORPUS / "tiny.yaml"), tmp_path / "w.safetensors")
    code = ("import sys; sys.modules['torch'] = None\n"
            "from archspec.cli import main\n"
            f"assert main(['summary', {str(CORPUS / 'tiny.yaml')!r}, '--weights', {str(tmp_path / 'w.safetensors')!r}]) == 0\n"
            "assert not [m for m in sys.modules if m.startswith(('torch', 'onnx')) and sys.modules[m] is not None]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "match spec 'tiny': 8 tensors" in r.stdout  # conv, batchnorm's 5, fc's 2


def test_summary_paper_weights_is_the_bias_free_column(capsys):
    assert main(["summary", str(ROOT / "specs/googlenet_paper.yaml"), "--depth", "1", "--paper-weights"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.split()[:1] == ["inception3a"])
    assert "163,328" in row.split()  # GoogLeNet Table 1's inception (3a): weights without biases (docs/lecture.md)
