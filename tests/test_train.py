"""Trainability: gradients flow through every construct of a compiled spec. LeNet learns real
handwritten digits (scikit-learn's 8x8 set, upsampled to the spec's 28x28); a GRU learns to
carry information across a sequence."""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import archspec


def test_lenet_learns_digits_to_95_percent() -> None:
    x, y = load_digits(return_X_y=True)
    images = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8)
    images = F.interpolate(images, size=(28, 28), mode="bilinear", align_corners=False)  # (N, 1, 28, 28)
    images = (images - images.mean()) / images.std()
    labels = torch.tensor(y)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    train, test = order[:1400], order[1400:]

    torch.manual_seed(0)
    model = archspec.build("specs/lenet.yaml", seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(12):
        model.train()
        for i in range(0, len(train), 50):
            batch = train[i:i + 50]
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean().item()
    assert accuracy >= 0.95, accuracy


def test_gru_learns_to_remember_the_first_step(tmp_path: Path) -> None:
    """The class is written only at t=0, then 11 steps of noise: the last step's output must carry it."""
    spec = tmp_path / "recall.yaml"
    spec.write_text(textwrap.dedent("""
        archspec: 1
        name: recall
        input: {x: [time=12, 4]}
        network:
          - gru: {hidden: 32, layers: 2, output: last}
          - linear: {out: 4}
    """))
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 4, (n,), generator=g)
        x = 0.3 * torch.randn(n, 12, 4, generator=g)
        x[:, 0] = F.one_hot(labels, 4).float() * 3
        return x, labels

    torch.manual_seed(0)
    model = archspec.build(spec, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        x, labels = batch(64)
        loss = F.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, labels = batch(512)
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95, accuracy
