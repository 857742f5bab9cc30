"""Small real students for serving tests: random weights, saved through the real artifact writer."""

from __future__ import annotations

import socket
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ITEMS = [
    {"id": "mug", "title": "Red ceramic mug", "description": "A mug for coffee", "lang": "en"},
    {"id": "lamp", "title": "Brass desk lamp", "captions": ["a lamp on a desk"], "lang": "en"},
    {"id": "tasse", "title": "Rote Tasse aus Keramik", "boards": ["Küche"], "lang": "de"},
    {"id": "cup", "title": "東京 マグカップ", "lang": "ja"},
]


def haproxy_env() -> dict[str, str]:
    """Environment for Ray Serve's HAProxy ingress in a test: its stats page and metrics endpoint
    listen on fixed ports (8404, 9101) of every interface by default, so each run gets free ones."""
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
    }
