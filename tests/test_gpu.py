"""The GPU paths, end to end on a real CUDA device: teacher training on Ray Train with `use_gpu` and
bf16 autocast (LoRA Llama and fully fine-tuned BERT), inference and embeddings on a GPU, labeling in
a Ray actor given a GPU, distillation with one GPU worker, and a Serve replica given a GPU.

Skipped where torch sees no CUDA device (CI's machines have none). `PINREL_GPU_TESTS_ON_CPU=1` runs
the same steps with the GPU switched off, to debug this file on a CPU-only machine before spending
GPU time on it; the GPU-only assertions (device names, bf16 closeness) then compare like with like.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pinrel.teacher import load_teacher, train_teacher
from pinrel.testing import tiny_bert, tiny_llama

from .test_distill import TINY
from .test_label import _probs
from .test_teacher import config, synthetic_files

ON_CPU = os.environ.get("PINREL_GPU_TESTS_ON_CPU") == "1"
GPU = torch.cuda.is_available() and not ON_CPU
DEVICE = "cuda" if GPU else "cpu"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (torch.cuda.is_available() or ON_CPU),
        reason="needs a CUDA GPU (PINREL_GPU_TESTS_ON_CPU=1 dry-runs)",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    import ray

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    ray.init(address="local", num_cpus=4, num_gpus=1 if GPU else 0, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthetic_files(tmp_path_factory.mktemp("gpu"), 600, 120)


@pytest.fixture(scope="module")
def llama_teacher(cluster: None, data: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    base = tiny_llama(data["root"] / "tiny-llama", data["texts"])
    cfg = config(base, epochs=3, lr=2e-3, use_gpu=GPU, bf16=GPU)
    out = data["root"] / "llama-teacher"
    return out, train_teacher(data["train"], data["dev"], cfg, out)


@pytest.fixture(scope="module")
def bert_teacher(cluster: None, data: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    base = tiny_bert(data["root"] / "tiny-bert", data["texts"])
    cfg = config(base, epochs=3, use_gpu=GPU, bf16=GPU)
    out = data["root"] / "bert-teacher"
    return out, train_teacher(data["train"], data["dev"], cfg, out)


@pytest.mark.parametrize("which", ["llama_teacher", "bert_teacher"])
def test_teacher_trains_on_the_gpu_in_bf16(
    which: str, data: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    out, manifest = request.getfixturevalue(which)
    assert manifest["config"]["use_gpu"] is GPU and manifest["config"]["bf16"] is GPU
    # Chance (always one grade) is 1/3 on this balanced data; the dev loss must fall as it learns.
    history = manifest["history"]
    assert manifest["metrics"]["accuracy"] > 0.5, history
    assert history[-1]["dev_loss"] < history[0]["dev_loss"], history
    # The export is an fp32 checkpoint any machine loads: CPU and GPU (fp32) agree to float error.
    cpu = load_teacher(out, device="cpu", dtype="float32", progress=False)
    rows = data["dev"].slice(0, 64)
    p_cpu = cpu.predict_proba(rows)
    p_gpu32 = load_teacher(out, device=DEVICE, dtype="float32", progress=False).predict_proba(rows)
    np.testing.assert_allclose(p_gpu32, p_cpu, atol=1e-4)
    # The labeler's default on a GPU is bf16: close to fp32, and the same grades almost everywhere.
    p_auto = load_teacher(out, device=DEVICE, progress=False).predict_proba(rows)
    assert float(np.abs(p_auto - p_cpu).max()) < 0.05
    assert float((p_auto.argmax(1) == p_cpu.argmax(1)).mean()) >= 0.95


def test_embeddings_on_the_gpu_match_the_cpu(
    bert_teacher: tuple[Path, dict[str, Any]], data: dict[str, Any]
) -> None:
    from pinrel.embed import embed_file

    teacher, _ = bert_teacher
    texts = data["root"] / "train.parquet"
    cpu, gpu = data["root"] / "emb-cpu.npy", data["root"] / "emb-gpu.npy"
    embed_file(teacher, texts, cpu, column="query", device="cpu", progress=False)
    embed_file(teacher, texts, gpu, column="query", device=DEVICE, progress=False)
    a, b = np.load(cpu), np.load(gpu)
    assert a.shape == b.shape == (600, 64) and np.isfinite(b).all()
    # bf16 on the GPU: the same directions, to bf16's three significant digits.
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert float(cos.min()) > 0.99


@pytest.fixture(scope="module")
def gpu_labels(llama_teacher: tuple[Path, dict[str, Any]], data: dict[str, Any]) -> dict[str, Path]:
    from pinrel.label import label_pairs, label_pairs_ray

    teacher, _ = llama_teacher
    pairs = data["root"] / "pairs.parquet"
    pq.write_table(data["train"], pairs, row_group_size=100)
    reference = data["root"] / "labels-cpu"
    label_pairs(
        pairs,
        teacher,
        reference,
        backend="hf",
        shard_size=200,
        progress=False,
        backend_kwargs={"device": "cpu"},
    )
    on_ray = data["root"] / "labels-ray-gpu"
    label_pairs_ray(
        pairs,
        teacher,
        on_ray,
        actors=1,
        gpus_per_actor=1.0 if GPU else 0.0,
        backend="hf",
        shard_size=200,
        progress=False,
    )
    return {"pairs": pairs, "cpu": reference, "gpu": on_ray}


def test_labels_from_a_gpu_actor_match_the_cpu(gpu_labels: dict[str, Path]) -> None:
    from pinrel.label import read_labels

    cpu, gpu = read_labels(gpu_labels["cpu"]), read_labels(gpu_labels["gpu"])
    assert cpu.num_rows == gpu.num_rows == 600
    p_cpu, p_gpu = _probs(cpu), _probs(gpu)
    np.testing.assert_allclose(p_gpu.sum(1), 1.0, atol=1e-5)
    # The actor's backend chose the GPU in bf16 by itself: close to the fp32 CPU labels, not equal.
    assert float(np.abs(p_gpu - p_cpu).max()) < 0.05
    assert float((p_gpu.argmax(1) == p_cpu.argmax(1)).mean()) >= 0.95
    if GPU:
        assert not np.array_equal(p_gpu, p_cpu)


@pytest.fixture(scope="module")
def student(gpu_labels: dict[str, Path], data: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    from pinrel.distill import distill

    out = data["root"] / "student"
    return out, distill(gpu_labels["gpu"], out, {**TINY, "workers": 1, "gpu": GPU, "epochs": 4})


def test_student_distils_on_a_gpu_worker_and_scores_on_either_device(
    student: tuple[Path, dict[str, Any]], data: dict[str, Any]
) -> None:
    from pinrel.student import Scorer

    out, summary = student
    history = summary["history"]
    assert history[-1]["loss"] < history[0]["loss"], history
    rows = data["dev"].slice(0, 64)
    on_cpu = Scorer.load(out, device="cpu").predict_proba(rows)
    on_dev = Scorer.load(out, device=DEVICE).predict_proba(rows)
    np.testing.assert_allclose(on_dev, on_cpu, atol=1e-5)


def test_a_serve_replica_given_a_gpu_scores_on_it(cluster: None, tmp_path: Path) -> None:
    from ray import serve

    from pinrel import Client
    from pinrel.ingress import free_port
    from pinrel.serving import RelevanceService
    from pinrel.student import Scorer

    from .serving_helpers import ITEMS, make_student

    model = make_student(tmp_path / "student", seed=1)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = RelevanceService.options(  # type: ignore[attr-defined]
            ray_actor_options={"num_cpus": 1, "num_gpus": 1 if GPU else 0}
        ).bind(model_path=str(model))
        serve.run(app, name="pinrel", route_prefix="/")
        client = Client(f"http://127.0.0.1:{port}")
        assert client.model()["device"] == ("cuda:0" if GPU else "cpu")
        results = client.score("red mug", ITEMS)
        expected = Scorer.load(model, device="cpu").score("red mug", ITEMS)
        by_index = {r["index"]: r["score"] for r in results}
        np.testing.assert_allclose([by_index[i] for i in range(len(ITEMS))], expected.scores, atol=1e-4)
    finally:
        serve.shutdown()
