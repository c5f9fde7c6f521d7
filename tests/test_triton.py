"""Triton model repositories: every zoo spec's config.pbtxt parses into Triton's own ModelConfig
message (tritonclient's model_config_pb2) and agrees with the exported ONNX file, read here with
onnx directly, and with the analysed spec. No Triton server runs here: nothing claims it loaded."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

import archspec
from archspec.triton import TritonError, preferred_sizes, write_repository

ROOT = Path(__file__).resolve().parent.parent
ZOO = sorted((ROOT / "specs").glob("*.yaml"))
EXAMPLES = [ROOT / "examples" / "image_metadata.yaml", ROOT / "examples" / "multiscale_head.yaml"]  # 2 inputs; a skip
LARGE = {"alexnet", "vgg11", "vgg11_bn", "vgg16_bn", "vgg11_lrn", "vgg13", "vgg16", "vgg16_c", "vgg19", "resnet101", "resnet152"}
# ONNX TensorProto element type name -> Triton DataType name (Triton docs, "Datatypes" table)
ONNX_TO_TRITON = {"FLOAT": "TYPE_FP32", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32", "DOUBLE": "TYPE_FP64",
                  "FLOAT16": "TYPE_FP16", "BOOL": "TYPE_BOOL", "UINT8": "TYPE_UINT8", "INT8": "TYPE_INT8"}


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def onnx_io(path: Path) -> tuple[list, list]:
    model = onnx.load(str(path), load_external_data=False)
    init = {t.name for t in model.graph.initializer}

    def rows(values):
        return [(v.name, onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type),
                 [d.dim_param if d.HasField("dim_param") else d.dim_value for d in v.type.tensor_type.shape.dim])
                for v in values if v.name not in init]
    return rows(model.graph.input), rows(model.graph.output)


def assert_agrees(root: Path, report: archspec.Report, max_batch: int) -> mc.ModelConfig:
    name = report.graph.name
    config = parse(root / name / "config.pbtxt")
    model = root / name / "1" / "model.onnx"
    assert model.is_file()
    assert config.name == name and config.platform == "onnxruntime_onnx"
    inputs, outputs = onnx_io(model)
    batched = all(isinstance(dims[0], str) for _, _, dims in inputs + outputs)
    assert config.max_batch_size == (max_batch if batched else 0)
    for entries, tensors in ((config.input, inputs), (config.output, outputs)):
        assert [e.name for e in entries] == [n for n, _, _ in tensors]
        for entry, (_, elem, dims) in zip(entries, tensors):
            assert mc.DataType.Name(entry.data_type) == ONNX_TO_TRITON[elem]
            want = [-1 if isinstance(d, str) else d for d in (dims[1:] if batched else dims)]
            assert list(entry.dims) == want
    # ... and with the analysed spec: every input's declared shape (symbolic axes -1), every output's
    assert [e.name for e in config.input] == [i.name for i in report.graph.inputs]
    for entry, declared in zip(config.input, report.graph.inputs):
        assert list(entry.dims) == [-1 if d.name else d.size for d in declared.dims]
    assert [e.name for e in config.output] == list(report.outputs)
    for entry, typ in zip(config.output, report.outputs.values()):
        dims = list(entry.dims)  # a symbolic axis (-1) carries the spec's nominal size in the report
        assert len(dims) == len(typ.shape) and all(c in (-1, s) for c, s in zip(dims, typ.shape))
    if batched:
        assert list(config.dynamic_batching.preferred_batch_size) == list(preferred_sizes(max_batch))
        assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    else:
        assert not config.HasField("dynamic_batching")
    assert config.version_policy.latest.num_versions == 1
    assert [(g.count, mc.ModelInstanceGroup.Kind.Name(g.kind)) for g in config.instance_group] == [(1, "KIND_CPU")]
    return config


@pytest.mark.parametrize("spec", [pytest.param(p, marks=pytest.mark.slow) if p.stem in LARGE else p
                                  for p in ZOO + EXAMPLES], ids=lambda p: p.stem)
def test_zoo_repository_config_parses_and_agrees(spec: Path, tmp_path: Path) -> None:
    """Every zoo spec (googlenet_aux: three outputs) and the two-input example. check=False: the
    export's own verification is test_export's; here only the contract counts."""
    report = archspec.check(spec)
    repo = write_repository(report, tmp_path / "repo", check=False)
    assert repo.validated_with.startswith("tritonclient ")
    assert_agrees(tmp_path / "repo", report, 8)


def test_preferred_sizes() -> None:
    assert preferred_sizes(1) == (1,)
    assert preferred_sizes(8) == (2, 4, 8)
    assert preferred_sizes(12) == (2, 4, 8, 12)


def test_static_batch_gpu_and_versions(tmp_path: Path) -> None:
    report = archspec.check(ROOT / "specs" / "lenet.yaml")
    write_repository(report, tmp_path, dynamic="none", device="gpu", version=3, check=False)
    config = parse(tmp_path / "lenet" / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [1, 1, 28, 28]
    assert list(config.output[0].dims) == [1, 10] and not config.HasField("dynamic_batching")
    assert mc.ModelInstanceGroup.Kind.Name(config.instance_group[0].kind) == "KIND_GPU"
    write_repository(report, tmp_path, version=4, max_batch=16, check=False)
    assert sorted(p.name for p in (tmp_path / "lenet").iterdir()) == ["3", "4", "config.pbtxt"]
    config = parse(tmp_path / "lenet" / "config.pbtxt")
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8, 16]


def test_bad_requests(tmp_path: Path) -> None:
    report = archspec.check(ROOT / "specs" / "lenet.yaml")
    with pytest.raises(TritonError, match="versions are positive"):
        write_repository(report, tmp_path, version=0)
    with pytest.raises(TritonError, match="max batch must be >= 1"):
        write_repository(report, tmp_path, max_batch=0, check=False)
    with pytest.raises(TritonError, match="does not exist"):
        write_repository(report, tmp_path / "a" / "b")
    (tmp_path / "file").write_text("")
    with pytest.raises(TritonError, match="not a folder"):
        write_repository(report, tmp_path / "file")


def test_cli_export_triton_repo(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "archspec.cli", "export", str(ROOT / "specs" / "lenet.yaml"),
                        "--triton-repo", str(tmp_path / "models")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "verified:" in r.stdout and "parsed into Triton's ModelConfig (tritonclient " in r.stdout
    assert_agrees(tmp_path / "models", archspec.check(ROOT / "specs" / "lenet.yaml"), 8)
    r = subprocess.run([sys.executable, "-m", "archspec.cli", "export", str(ROOT / "specs" / "lenet.yaml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "export needs -o MODEL.onnx or --triton-repo DIR" in r.stderr


def two_in_two_out(path: Path) -> Path:
    """A hand-built ONNX graph with two inputs and two outputs (a: batch x 3, b: batch x time int64)."""
    from onnx import TensorProto, helper

    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3])
    b = helper.make_tensor_value_info("b", TensorProto.INT64, ["batch", "time"])
    s = helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 3])
    c = helper.make_tensor_value_info("count", TensorProto.INT64, ["batch", "time"])
    nodes = [helper.make_node("Add", ["a", "a"], ["sum"]), helper.make_node("Identity", ["b"], ["count"])]
    graph = helper.make_graph(nodes, "two", [a, b], [s, c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def test_config_of_several_inputs_and_outputs(tmp_path: Path) -> None:
    from archspec.contract import read_contract
    from archspec.triton import triton_config

    contract = read_contract(two_in_two_out(tmp_path / "two.onnx"), "two")
    config = text_format.Parse(triton_config(contract, max_batch=4).text(), mc.ModelConfig())
    assert config.max_batch_size == 4
    assert [(i.name, mc.DataType.Name(i.data_type), list(i.dims)) for i in config.input] == \
        [("a", "TYPE_FP32", [3]), ("b", "TYPE_INT64", [-1])]
    assert [(o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output] == \
        [("sum", "TYPE_FP32", [3]), ("count", "TYPE_INT64", [-1])]
