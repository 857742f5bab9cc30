"""Small real students for serving tests: random weights, saved through the real artifact writer."""

from __future__ import annotations

from pathlib import Path

import torch

import pinrel
from pinrel.student import StudentConfig, StudentModel, save_student

N_FEATURES = 2**12


def make_student(out: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = StudentModel(StudentConfig(grades=5, n_features=N_FEATURES, embed_dim=16, hidden=(32,)))
    model.eval()
    save_student(out, model, pinrel.FeatureHasher(n_features=N_FEATURES), pinrel.AssemblySpec())
    return out


ITEMS = [
    {"id": "mug", "title": "Red ceramic mug", "description": "A mug for coffee", "lang": "en"},
    {"id": "lamp", "title": "Brass desk lamp", "captions": ["a lamp on a desk"], "lang": "en"},
    {"id": "tasse", "title": "Rote Tasse aus Keramik", "boards": ["Küche"], "lang": "de"},
    {"id": "cup", "title": "東京 マグカップ", "lang": "ja"},
]
