"""pinrel.teacher: real fine-tuning of tiny models on Ray Train, export, reload, resume and input checks."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np
import pyarrow as pa
import pytest
import torch

import pinrel
from pinrel.cli import main as cli_main
from pinrel.io import current_umask
from pinrel.killhook import KILL_ENV
from pinrel.label import teacher_identity
from pinrel.predictor import ModelDirError, load_predictor
from pinrel.records import make_records, records_digest, write_records
from pinrel.teacher import TeacherConfig, TeacherError, load_teacher, train_teacher
from pinrel.testing import tiny_bert, tiny_llama

NOUNS = "mug lamp chair table sofa vase rug clock shelf desk bowl plate kettle candle mirror pillow".split()
ADJECTIVES = "red blue green black white wooden metal glass".split()
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit".split()


def synthetic(n: int, seed: int) -> pa.Table:
    """Three balanced grades with a learnable signal: 5 = the title names the query's noun, 2 = same
    adjective, other noun, 1 = filler words. Majority-class accuracy is therefore 1/3."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        adj, noun = rng.choice(ADJECTIVES), rng.choice(NOUNS)
        other = rng.choice([x for x in NOUNS if x != noun])
        title, label = [
            (f"{rng.choice(ADJECTIVES)} {noun}", 5),
            (f"{adj} {other}", 2),
            (f"{rng.choice(FILLER)} {rng.choice(FILLER)}", 1),
        ][i % 3]
        rows.append(
            {
                "query": f"{adj} {noun}",
                "title": title,
                "description": f"a {title} for the home",
                "label": label,
                "lang": "en",
            }
        )
    return make_records(rows, grades=5)


def config(model: Path, **kw: Any) -> TeacherConfig:
    base: dict[str, Any] = {
        "model": str(model),
        "epochs": 1,
        "batch_size": 8,
        "max_length": 48,
        "lr": 3e-3,
        "warmup_ratio": 0.0,
        "progress": False,
    }
    return TeacherConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    import ray

    # Tiny models gain nothing from intra-op threads, and on a busy 2-CPU machine spinning threads cost a lot.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # Ray Train gives a worker group 60 s to start (import torch, transformers, peft); a shared CI machine
    # under load can take longer, and that must not fail the test.
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()
    torch.set_num_threads(threads)


def synthetic_files(root: Path, n_train: int, n_dev: int) -> dict[str, Any]:
    """Train and dev records (tables and Parquet files under `root`) and the train pairs' texts."""
    train, dev = synthetic(n_train, seed=0), synthetic(n_dev, seed=1)
    write_records(train, root / "train.parquet")
    write_records(dev, root / "dev.parquet")
    texts = pinrel.assemble_pairs(train.column("query").to_pylist(), train)
    return {
        "root": root,
        "train": train,
        "dev": dev,
        "train_path": root / "train.parquet",
        "dev_path": root / "dev.parquet",
        "texts": texts,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return synthetic_files(tmp_path_factory.mktemp("teacher-data"), 300, 90)


@pytest.fixture(scope="module")
def bert_model(data: dict[str, Any]) -> Path:
    return tiny_bert(data["root"] / "tiny-bert", data["texts"])


@pytest.fixture(scope="module")
def llama_model(data: dict[str, Any]) -> Path:
    return tiny_llama(data["root"] / "tiny-llama", data["texts"])


@pytest.fixture(scope="module")
def bert_run(ray_cluster: None, data: dict[str, Any], bert_model: Path) -> tuple[Path, dict[str, Any]]:
    out = data["root"] / "bert-teacher"
    manifest = train_teacher(data["train_path"], data["dev_path"], config(bert_model), out)
    return out, json.loads(json.dumps(manifest))


@pytest.fixture(scope="module")
def bert_resumed(
    bert_run: tuple[Path, dict[str, Any]], data: dict[str, Any], bert_model: Path
) -> dict[str, Any]:
    out, _ = bert_run
    # A relative output path, as the CLI usually gets one.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(out.parent)
        return train_teacher(data["train"], data["dev"], config(bert_model, epochs=2), out.name)


@pytest.fixture(scope="module")
def llama_run(ray_cluster: None, data: dict[str, Any], llama_model: Path) -> tuple[Path, dict[str, Any]]:
    out = data["root"] / "llama-teacher"
    manifest = train_teacher(data["train"], data["dev"], config(llama_model, lr=2e-3), out)
    return out, manifest


def plain_transformers_proba(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Reference probabilities, one unpadded pair at a time, with nothing from pinrel in the path."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    rows = []
    with torch.inference_mode():
        for text in texts:
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(torch.softmax(model(**enc).logits.float(), dim=-1)[0].numpy())
    return np.stack(rows)


# ------------------------------------------------------------------------------------------ full FT BERT


def test_bert_manifest_and_outputs(bert_run: tuple[Path, dict[str, Any]], data: dict[str, Any]) -> None:
    out, manifest = bert_run
    on_disk = json.loads((out / "pinrel.json").read_text())
    assert on_disk["kind"] == "teacher"
    assert on_disk["version"] == pinrel.__version__
    assert manifest["grades"] == 5 and manifest["lora"] is None and manifest["decoder"] is False
    assert manifest["architecture"] == "BertForSequenceClassification"
    assert manifest["train_rows"] == 300 and manifest["dev_rows"] == 90
    assert manifest["train_sha256"] == records_digest(data["train"])
    assert manifest["dev_sha256"] == records_digest(data["dev"]) != manifest["train_sha256"]
    assert manifest["assembly_spec"] == pinrel.AssemblySpec().to_dict()
    assert set(manifest["metrics"]) == {"loss", "accuracy", "mae"}
    assert manifest["metrics"]["accuracy"] == manifest["history"][-1]["dev_accuracy"]
    assert [h["epoch"] for h in manifest["history"]] == [1]
    assert manifest["resumed_from_epoch"] is None
    assert (out / "model" / "model.safetensors").is_file()
    # Readable by other users (vLLM, labeling actors): safetensors writes private 0600 files.
    umask = current_umask()
    assert {oct(p.stat().st_mode & 0o777) for p in (out / "model").iterdir()} == {oct(0o666 & ~umask)}
    assert not (out / "adapter").exists()
    assert not list(out.glob(".export-*")), "the staging folder must not survive the export"


def test_bert_merged_model_matches_load_teacher(
    bert_run: tuple[Path, dict[str, Any]], data: dict[str, Any]
) -> None:
    out, _ = bert_run
    dev: pa.Table = data["dev"].slice(0, 24)
    # The CPU in fp32, as the reference runs: on a GPU the default is bf16 (tests/test_gpu.py covers it).
    teacher = load_teacher(out, device="cpu", progress=False, max_tokens=256, max_batch_size=8)
    probs = teacher.predict_proba(dev)
    assert probs.shape == (24, 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    reference = plain_transformers_proba(out / "model", teacher.pair_texts(dev), max_length=48)
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    # The same records as a list of dicts, and through the generic loader.
    as_dicts = load_predictor(out, device="cpu", progress=False).predict_proba(dev.to_pylist())
    np.testing.assert_allclose(as_dicts, probs, atol=1e-5)
    assert teacher.embed_texts(["red mug", "blue lamp"]).shape == (2, 64)


# ------------------------------------------------------------------------- mean-pooled sentence encoder


def as_sentence_encoder(model: Path, out: Path, pooling: str = "mean") -> Path:
    """A copy of `model` with the files sentence-transformers writes beside a checkpoint it pools."""
    shutil.copytree(model, out)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir()
    flags = {"pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_cls_token": pooling == "cls"}
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64, **flags}))
    return out


@pytest.fixture(scope="module")
def mean_run(ray_cluster: None, data: dict[str, Any], bert_model: Path) -> tuple[Path, dict[str, Any]]:
    encoder = as_sentence_encoder(bert_model, data["root"] / "tiny-sentence-bert")
    out = data["root"] / "mean-teacher"
    manifest = train_teacher(data["train_path"], data["dev_path"], config(encoder, epochs=2), out)
    return out, json.loads(json.dumps(manifest))


def test_a_sentence_encoder_trains_a_mean_pooled_head(
    mean_run: tuple[Path, dict[str, Any]], data: dict[str, Any]
) -> None:
    from transformers import AutoModelForSequenceClassification

    from pinrel.backends import get_backend
    from pinrel.backends.hf import HFBackend
    from pinrel.teacher.config import inspect_model

    out, manifest = mean_run
    assert manifest["pooling"] == "mean" and manifest["config"]["pooling"] is None
    assert manifest["architecture"] == "MeanPooledClassifier"
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "pinrel_mean_pooled"
    # Chance (always the majority grade) is 1/3 on this balanced data.
    assert manifest["metrics"]["accuracy"] > 0.5, manifest["history"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(model).__name__ == "MeanPooledClassifier"
    assert not [n for n, _ in model.named_parameters() if "pooler" in n]
    dev: pa.Table = data["dev"].slice(0, 24)
    teacher = load_teacher(out, device="cpu", progress=False, max_tokens=256, max_batch_size=8)
    probs = teacher.predict_proba(dev)
    # Padded, bucketed batches give what one unpadded pair at a time gives: the mean skips padding.
    reference = plain_transformers_proba(out / "model", teacher.pair_texts(dev), max_length=48)
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert teacher.embed_texts(["red mug", "blue lamp"]).shape == (2, 64)
    assert isinstance(get_backend("auto", out / "model", device="cpu", progress=False), HFBackend)
    with pytest.raises(TeacherError, match="mean-pooled classifier, not a base model"):
        inspect_model(config(out / "model"))


def test_vllm_is_not_chosen_for_a_mean_pooled_teacher(
    mean_run: tuple[Path, dict[str, Any]], bert_run: tuple[Path, dict[str, Any]], monkeypatch: Any
) -> None:
    import pinrel.backends as backends
    from pinrel.backends.vllm import VLLMBackend

    out, _ = mean_run
    with pytest.raises(ModelDirError, match=r"mean-pooling head .* use the hf backend"):
        VLLMBackend(out)
    # Where vLLM is usable (a GPU), auto still picks hf for this teacher, and vLLM for the others.
    monkeypatch.setattr(backends, "vllm_usable", lambda: True)
    assert backends.resolve_backend_name("auto", [out]) == "hf"
    assert backends.resolve_backend_name("auto", [bert_run[0], out / "model"]) == "hf"
    assert backends.resolve_backend_name("auto", [bert_run[0]]) == "vllm"


def test_pooling_is_checked_before_training(
    tmp_path: Path, data: dict[str, Any], bert_model: Path, llama_model: Path
) -> None:
    from pinrel.teacher.config import inspect_model

    with pytest.raises(TeacherError, match=r"pooling: expected null \(auto\), 'last', 'cls', 'mean'"):
        config(bert_model, pooling="max")
    with pytest.raises(TeacherError, match="pooling: 'mean' is for encoders"):
        inspect_model(config(llama_model, pooling="mean"))
    with pytest.raises(TeacherError, match="pooling: 'last' is for decoders"):
        inspect_model(config(bert_model, pooling="last"))
    assert inspect_model(config(llama_model)).pooling == "last"
    assert inspect_model(config(bert_model)).pooling == "cls"  # no sentence-transformers config
    assert inspect_model(config(bert_model, pooling="mean")).pooling == "mean"
    cls_encoder = as_sentence_encoder(bert_model, tmp_path / "cls-encoder", pooling="cls")
    assert inspect_model(config(cls_encoder)).pooling == "cls"
    mean_encoder = as_sentence_encoder(bert_model, tmp_path / "mean-encoder")
    assert inspect_model(config(mean_encoder)).pooling == "mean"
    assert inspect_model(config(mean_encoder, pooling="cls")).pooling == "cls"
    (mean_encoder / "1_Pooling" / "config.json").write_text("{not json")
    assert inspect_model(config(mean_encoder)).pooling == "cls"


def test_eval_without_progress_draws_no_bars(
    bert_run: tuple[Path, dict[str, Any]], data: dict[str, Any], capfd: pytest.CaptureFixture[str]
) -> None:
    """`pinrel eval --no-progress` loaded a teacher whose backend still drew a bar for every slice."""
    from pinrel.cli import main

    out, _ = bert_run
    report = data["root"] / "eval-no-progress"
    argv = ["eval", "--model", str(out), "--data", str(data["dev_path"]), "--report", str(report)]
    assert main([*argv, "--baselines", "none", "--no-progress"]) == 0
    assert "it/s" not in capfd.readouterr().err


def test_resume_continues_from_last_epoch_and_learns(
    bert_run: tuple[Path, dict[str, Any]], bert_resumed: dict[str, Any]
) -> None:
    _, first = bert_run
    assert bert_resumed["resumed_from_epoch"] == 1
    assert [h["epoch"] for h in bert_resumed["history"]] == [1, 2]
    assert [h["resumed_from_epoch"] for h in bert_resumed["history"]] == [0, 1]
    # Epoch 1 was not retrained: its record is the one the first run wrote.
    assert bert_resumed["history"][0] == first["history"][0]
    steps = [h["global_step"] for h in bert_resumed["history"]]
    assert steps[1] == 2 * steps[0]
    # Chance (always the majority grade) is 1/3 on this balanced data.
    assert bert_resumed["metrics"]["accuracy"] > 0.5, bert_resumed["history"]


def test_rerun_when_done_only_exports(
    bert_resumed: dict[str, Any],
    bert_run: tuple[Path, dict[str, Any]],
    data: dict[str, Any],
    bert_model: Path,
) -> None:
    out, _ = bert_run
    before = {p: p.read_bytes() for p in (out / "pinrel.json", out / "model" / "model.safetensors")}
    identity = teacher_identity(out)
    again = train_teacher(data["train"], data["dev"], config(bert_model, epochs=2), out)
    assert again["history"] == bert_resumed["history"]
    # Nothing to train and the export is current: nothing is rewritten, so labels made from this
    # teacher still count as its own.
    assert again == json.loads((out / "pinrel.json").read_text())
    assert all(p.read_bytes() == b for p, b in before.items())
    assert teacher_identity(out) == identity
    # Settings of how a run is carried out do not make another model; nor does a manifest from before
    # such a setting existed (here max_failures) make the export stale.
    manifest = json.loads((out / "pinrel.json").read_text())
    del manifest["config"]["max_failures"]
    del manifest["pooling"], manifest["config"]["pooling"]  # [CLS], as every teacher pooled before
    (out / "pinrel.json").write_text(json.dumps(manifest))
    before[out / "pinrel.json"] = (out / "pinrel.json").read_bytes()
    train_teacher(
        data["train"], data["dev"], config(bert_model, epochs=2, max_failures=3, progress=True), out
    )
    assert all(p.read_bytes() == b for p, b in before.items())
    # An export that is gone (or half there) is written again from the checkpoint.
    shutil.rmtree(out / "model")
    again = train_teacher(data["train"], data["dev"], config(bert_model, epochs=2), out)
    assert again["history"] == bert_resumed["history"] and again["resumed_from_epoch"] == 2
    assert (out / "model" / "model.safetensors").read_bytes() == before[out / "model" / "model.safetensors"]
    with pytest.raises(TeacherError, match="different run"):
        train_teacher(data["train"], data["dev"], config(bert_model, epochs=2, max_length=32), out)
    with pytest.raises(TeacherError, match="after 2 epochs"):
        train_teacher(data["train"], data["dev"], config(bert_model, epochs=1), out)
    # Other records under the same settings: one more epoch would train one model on two datasets.
    with pytest.raises(TeacherError, match=r"different run \(train_data changed\)"):
        train_teacher(data["train"].slice(1), data["dev"], config(bert_model, epochs=3), out)
    relabelled = data["dev"].set_column(
        data["dev"].schema.get_field_index("label"), "label", pa.array([1] * 90, pa.int32())
    )
    with pytest.raises(TeacherError, match=r"different run \(dev_data changed\)"):
        train_teacher(data["train"], relabelled, config(bert_model, epochs=3), out)
    with pytest.raises(TeacherError, match=r"dev_data changed"):
        train_teacher(data["train"], None, config(bert_model, epochs=3), out)
    # Checkpoints from before pinrel recorded the data carry no train_data/dev_data: they cannot be
    # checked, and refusing them would strand every unfinished run.
    legacy = data["root"] / "bert-teacher-legacy"
    shutil.copytree(out, legacy)
    states = list((legacy / "_ray").rglob("state.json"))
    assert states
    for path in states:
        state = json.loads(path.read_text())
        for key in ("train_data", "dev_data", "pooling"):
            del state["fingerprint"][key]
        path.write_text(json.dumps(state))
    again = train_teacher(data["train"].slice(1), data["dev"], config(bert_model, epochs=2), legacy)
    assert again["history"] == bert_resumed["history"]
    assert again["train_rows"] == 299


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("trainable.safetensors", lambda b: b[: len(b) // 2]),
        ("rng.safetensors", lambda b: b[:-7]),
        ("optimizer.pt", lambda b: b[: len(b) // 2]),
        ("state.json", lambda b: b"{not json"),
    ],
)
def test_damaged_checkpoint_is_refused_before_training(
    bert_resumed: dict[str, Any],
    bert_run: tuple[Path, dict[str, Any]],
    data: dict[str, Any],
    bert_model: Path,
    tmp_path: Path,
    name: str,
    damage: Any,
) -> None:
    # bert_resumed is asked for its effect only: the run folder then holds its final two-epoch
    # state, whichever of the tests sharing it runs first.
    copy = _copy_of(bert_run[0], tmp_path)
    files = list((copy / "_ray").rglob(name))
    assert files
    for f in files:
        f.write_bytes(damage(f.read_bytes()))
    before = _files(copy)
    with pytest.raises(TeacherError, match=r"checkpoint \S+ is unreadable .*--fresh"):
        train_teacher(data["train"], data["dev"], config(bert_model, epochs=3), copy)
    assert _files(copy) == before  # nothing touched


def _copy_of(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "teacher"
    shutil.copytree(out, copy)
    return copy


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_rerun_never_puts_other_settings_on_the_weights(
    bert_resumed: dict[str, Any],
    bert_run: tuple[Path, dict[str, Any]],
    data: dict[str, Any],
    bert_model: Path,
    tmp_path: Path,
) -> None:
    """A finished run rerun with another lr or seed used to re-export its weights under the new
    settings' names; with its Ray run deleted, it trained again over the export on any data."""
    copy = _copy_of(bert_run[0], tmp_path)
    before = _files(copy)
    with pytest.raises(TeacherError, match=r"different run \(lr, seed changed\)"):
        train_teacher(data["train"], data["dev"], config(bert_model, epochs=2, lr=1e-4, seed=5), copy)
    assert _files(copy) == before
    with pytest.raises(TeacherError, match=r"different run \(pooling changed\)"):
        train_teacher(data["train"], data["dev"], config(bert_model, epochs=2, pooling="mean"), copy)
    assert _files(copy) == before
    # Ray's run deleted to save space: the same command returns the export as it is (here with a
    # worker count that only says where to run), and other settings or data are refused.
    shutil.rmtree(copy / "_ray")
    before = _files(copy)
    again = train_teacher(data["train"], data["dev"], config(bert_model, epochs=2, num_workers=2), copy)
    assert again == json.loads((copy / "pinrel.json").read_text()) and again["config"]["num_workers"] == 1
    for changed, kwargs, train in (
        ("seed", {"seed": 5}, data["train"]),
        ("epochs", {"epochs": 3}, data["train"]),
        ("train data", {}, data["train"].slice(1)),
        ("pooling", {"pooling": "mean"}, data["train"]),
    ):
        with pytest.raises(TeacherError, match=rf"\({changed} changed\) and no checkpoint .*--fresh"):
            train_teacher(train, data["dev"], config(bert_model, **{"epochs": 2, **kwargs}), copy)
    assert _files(copy) == before


@pytest.fixture(scope="module")
def bert_two_workers(
    ray_cluster: None, data: dict[str, Any], bert_model: Path
) -> tuple[Path, dict[str, Any]]:
    """An uninterrupted 2-worker, 2-epoch run: what a killed and resumed one must reproduce."""
    out = data["root"] / "bert-two-workers"
    return out, train_teacher(data["train"], data["dev"], config(bert_model, epochs=2, num_workers=2), out)


@pytest.mark.parametrize("max_failures", [1, 0])
def test_killed_run_resumes_as_if_never_interrupted(
    bert_two_workers: tuple[Path, dict[str, Any]],
    data: dict[str, Any],
    bert_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    max_failures: int,
) -> None:
    from safetensors.torch import load_file

    # Two workers, with dropout on (the tiny BERT's 0.1): the checkpoint must bring back each worker's
    # generator, not only the weights, optimizer and schedule, for epoch 2 to draw the same masks.
    whole_dir, whole = bert_two_workers
    cfg = config(bert_model, epochs=2, num_workers=2, max_failures=max_failures)
    monkeypatch.setenv(KILL_ENV, "1")
    out = tmp_path / "killed"
    if max_failures:
        # Ray restarts the workers from the epoch-1 checkpoint within the same call.
        resumed = train_teacher(data["train"], data["dev"], cfg, out)
        assert resumed["resumed_from_epoch"] is None  # not a rerun of an earlier call
    else:
        import ray.train

        with pytest.raises(ray.train.TrainingFailedError):
            train_teacher(data["train"], data["dev"], cfg, out)
        resumed = train_teacher(data["train"], data["dev"], cfg, out)
        assert resumed["resumed_from_epoch"] == 1
    assert (out / "_ray" / "killed.marker").is_file()  # rank 0 really died after epoch 1
    assert [h["resumed_from_epoch"] for h in resumed["history"]] == [0, 1]

    def timeless(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in h.items() if k not in ("seconds", "resumed_from_epoch")} for h in history]

    assert timeless(resumed["history"]) == timeless(whole["history"])
    a, b = (
        load_file(str(out / "model" / "model.safetensors")),
        load_file(str(whole_dir / "model" / "model.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_best_exports_the_epoch_with_the_lowest_dev_loss(
    ray_cluster: None, data: dict[str, Any], bert_model: Path, tmp_path: Path
) -> None:
    # A dev set graded against the training data (grades mirrored): the better the model fits the
    # training grades, the worse its dev loss, so the best epoch is an early one, not the last.
    grades = 5
    dev = data["train"].set_column(
        data["train"].column_names.index("label"),
        "label",
        pa.array([grades + 1 - g for g in data["train"].column("label").to_pylist()], pa.int64()),
    )
    out = tmp_path / "best"
    manifest = train_teacher(data["train"], dev, config(bert_model, epochs=3, keep_best=True), out)
    history = manifest["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3] and manifest["epochs"] == 3
    best = min(history, key=lambda h: h["dev_loss"])
    assert manifest["selected_epoch"] == best["epoch"] < 3, history
    assert manifest["metrics"]["loss"] == best["dev_loss"]
    # What was exported is that epoch's model: it reproduces that epoch's dev accuracy.
    probs = load_teacher(out).predict_proba(dev)
    labels = np.asarray(dev.column("label").to_pylist()) - 1
    assert float((probs.argmax(axis=1) == labels).mean()) == pytest.approx(best["dev_accuracy"], abs=1e-9)
    # A rerun finds the run complete and exports the same choice.
    again = train_teacher(data["train"], dev, config(bert_model, epochs=3, keep_best=True), out)
    assert again["selected_epoch"] == best["epoch"] and again["history"] == history


# ---------------------------------------------------------------------------------------- LoRA Llama


def test_llama_lora_export_matches_plain_transformers(
    llama_run: tuple[Path, dict[str, Any]], llama_model: Path, data: dict[str, Any]
) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    out, manifest = llama_run
    assert manifest["decoder"] is True
    assert manifest["architecture"] == "LlamaForSequenceClassification"
    assert manifest["lora"]["r"] == 8 and sorted(manifest["lora"]["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()

    merged = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert type(merged).__name__ == "LlamaForSequenceClassification"
    assert merged.config.pad_token_id is not None and merged.config.num_labels == 5
    # Training moved the head and (through the merged adapters) the attention projections.
    base = load_file(str(llama_model / "model.safetensors"))
    tuned = load_file(str(out / "model" / "model.safetensors"))
    assert not torch.equal(base["score.weight"], tuned["score.weight"])
    assert not torch.equal(
        base["model.layers.0.self_attn.q_proj.weight"], tuned["model.layers.0.self_attn.q_proj.weight"]
    )
    assert torch.equal(base["model.layers.0.mlp.up_proj.weight"], tuned["model.layers.0.mlp.up_proj.weight"])

    dev = data["dev"].slice(0, 16)
    teacher = load_teacher(out, device="cpu", progress=False)  # the reference's device and dtype
    probs = teacher.predict_proba(dev)
    np.testing.assert_allclose(
        probs, plain_transformers_proba(out / "model", teacher.pair_texts(dev), 48), atol=1e-5
    )


# ------------------------------------------------------------------------------ errors before training


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_training_loss_adds_the_expected_grade_error() -> None:
    from pinrel.teacher.loop import training_loss

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 1])
    probs = torch.softmax(logits, dim=-1)
    ce = -(probs[0, 0].log() + probs[1, 1].log()) / 2
    expected = probs @ torch.tensor([1.0, 2.0, 3.0])
    mse = ((expected - torch.tensor([1.0, 2.0])) ** 2).mean()
    assert torch.allclose(training_loss(logits, y), ce)
    assert torch.allclose(training_loss(logits, y, 0.5), ce + 0.5 * mse)
    # The term pulls the expected grade to the label: its gradient moves probability toward grade 2
    # for the second row, whose expected grade (near 3) overshoots.
    x = logits.clone().requires_grad_(True)
    (training_loss(x, y, 1.0) - training_loss(x, y, 0.0)).backward()
    assert x.grad is not None and x.grad[1, 2] > 0


def test_pairwise_loss_orders_pairs_of_one_query_only() -> None:
    from pinrel.teacher.loop import training_loss

    logits = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    ce = training_loss(logits, y)
    expected = torch.softmax(logits, dim=-1) @ torch.tensor([1.0, 2.0, 3.0])
    # one query: the pairs (1 over 0), (1 over 2), (2 over 0) by grade
    ranknet = torch.nn.functional.softplus(
        -torch.stack([expected[1] - expected[0], expected[1] - expected[2], expected[2] - expected[0]])
    ).mean()
    assert torch.allclose(training_loss(logits, y, pairwise_weight=2.0), ce + 2.0 * ranknet)
    # rows 0 and 1 in one query, row 2 alone: only (1 over 0) counts
    groups = torch.tensor([7, 7, 3])
    one_pair = torch.nn.functional.softplus(-(expected[1] - expected[0]))
    assert torch.allclose(training_loss(logits, y, pairwise_weight=1.0, groups=groups), ce + one_pair)
    # nothing to order (equal grades, or every query alone): plain cross-entropy, not NaN
    same = torch.tensor([1, 1, 1])
    assert torch.allclose(training_loss(logits, same, pairwise_weight=1.0), training_loss(logits, same))
    alone = torch.tensor([0, 1, 2])
    assert torch.allclose(training_loss(logits, y, pairwise_weight=1.0, groups=alone), ce)
    # the gradient raises the expected grade of the better item (row 1, ranked below row 0 now)
    x = logits.clone().requires_grad_(True)
    (training_loss(x, y, pairwise_weight=1.0, groups=groups) - training_loss(x, y)).backward()
    assert x.grad is not None and x.grad[1, 2] < 0 and x.grad[0, 2] > 0


def test_pair_weights_scale_each_term() -> None:
    from pinrel.teacher.loop import training_loss

    logits = torch.tensor([[0.0, 0.0, 2.0], [2.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 2, 1])
    w = torch.tensor([2.0, 0.5, 0.5])
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    expected = torch.softmax(logits, dim=-1) @ torch.tensor([1.0, 2.0, 3.0])
    se = (expected - torch.tensor([1.0, 3.0, 2.0])) ** 2
    ranknet = torch.nn.functional.softplus(
        -torch.stack([expected[1] - expected[0], expected[1] - expected[2], expected[2] - expected[0]])
    )
    pair_w = torch.tensor(
        [0.5 * 2.0, 0.5 * 0.5, 0.5 * 2.0]
    )  # w_i * w_j of (1 over 0), (1 over 2), (2 over 0)
    assert torch.allclose(training_loss(logits, y, weights=w), (w * ce).mean())
    assert torch.allclose(
        training_loss(logits, y, 0.5, 2.0, weights=w),
        (w * ce).mean() + 0.5 * (w * se).mean() + 2.0 * (pair_w * ranknet).mean(),
    )
    # weights of 1 are the unweighted loss
    for ordinal, pairwise in ((0.0, 0.0), (0.5, 2.0)):
        assert torch.allclose(
            training_loss(logits, y, ordinal, pairwise, weights=torch.ones(3)),
            training_loss(logits, y, ordinal, pairwise),
        )


def test_train_weights_have_mean_one_or_are_absent() -> None:
    from pinrel.teacher.data import train_weights

    assert train_weights(synthetic(6, seed=0)) is None
    t = make_records(
        [{"query": "a", "weight": 3.0}, {"query": "b"}, {"query": "c", "weight": 0.5}, {"query": "d"}]
    )
    np.testing.assert_allclose(train_weights(t), np.array([3.0, 1.0, 0.5, 1.0]) / 1.375)


def test_pair_weights_train_past_doubtful_labels(
    ray_cluster: None, tmp_path: Path, data: dict[str, Any], bert_model: Path
) -> None:
    """Half the train pairs have grades 5 and 1 swapped, so their text says nothing about which is which.
    Weighted at 1/100, the wrong half hardly counts and the teacher learns the task; unweighted, the
    same pairs leave it guessing between 5 and 1."""
    clean = data["train"].drop_columns(["weight"]).to_pylist()
    swapped = [
        {**r, "label": {5: 1, 1: 5}.get(r["label"], r["label"])} for r in synthetic(300, seed=2).to_pylist()
    ]
    runs = {}
    for name, low in (("weighted", 0.01), ("unweighted", None)):
        rows = [{**r, "weight": 1.0 if low else None} for r in clean]
        rows += [{**r, "weight": low} for r in swapped]
        out = tmp_path / name
        runs[name] = train_teacher(
            make_records(rows, grades=5), data["dev"], config(bert_model, epochs=2), out
        )
    assert runs["weighted"]["weighted_rows"] == 600 and runs["unweighted"]["weighted_rows"] == 0
    weighted, unweighted = runs["weighted"]["metrics"], runs["unweighted"]["metrics"]
    assert weighted["accuracy"] > 0.5, runs["weighted"]["history"]  # 3 balanced grades: chance is 1/3
    # on the clean dev set, the weighted teacher is far surer of the right grade (seen: 0.48 vs 0.95)
    assert weighted["loss"] < unweighted["loss"] - 0.2, (weighted, unweighted)


def test_query_batches_hold_one_query_each_and_cover_every_pair() -> None:
    from pinrel.teacher.data import epoch_batches, query_batches

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, size=500)
    lengths = rng.integers(5, 200, size=500)
    batches = query_batches(lengths, groups, 16, seed=1, epoch=0)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    assert all(len(np.unique(groups[b])) == 1 and 1 <= len(b) <= 16 for b in batches)
    # seeded by (seed, epoch): the same on every worker and on resume, another order next epoch
    again = query_batches(lengths, groups, 16, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
    assert [b.tolist() for b in query_batches(lengths, groups, 16, 1, 1)] != [b.tolist() for b in batches]
    # the plain batches mix queries, so they would leave the pairwise term almost nothing to compare
    assert any(len(np.unique(groups[b])) > 1 for b in epoch_batches(lengths, 16, 1, 0))
    with pytest.raises(ValueError, match="groups"):
        query_batches(lengths, groups[:10], 16, 1, 0)
    # queries are told apart as the evaluation tells them: query_id, else the normalised text
    from pinrel.teacher.data import query_groups

    table = pa.table({"query": ["Red Mug", "red  mug", "lamp", "lamp"], "query_id": [None, None, "a", "b"]})
    g = query_groups(table)
    assert g[0] == g[1] and len({g[1], g[2], g[3]}) == 3


@pytest.mark.parametrize(
    ("flag", "key", "value"),
    [("--ordinal-weight", "ordinal_weight", 0.5), ("--pairwise-weight", "pairwise_weight", 1.0)],
)
def test_loss_weight_trains_and_is_recorded(
    ray_cluster: None,
    tmp_path: Path,
    data: dict[str, Any],
    bert_model: Path,
    flag: str,
    key: str,
    value: float,
) -> None:
    out = tmp_path / key
    code = cli_main(
        ["teacher", "train", "--train", str(data["train_path"]), "--dev", str(data["dev_path"]),
         "--model", str(bert_model), "--out", str(out), "--epochs", "2", "--batch-size", "8",
         "--max-length", "48", "--lr", "3e-3", flag, str(value), "--no-progress"]
    )  # fmt: skip
    assert code == 0
    manifest = json.loads((out / "pinrel.json").read_text())
    assert manifest["config"][key] == value
    assert manifest["metrics"]["accuracy"] > 0.5, manifest["history"]  # 3 balanced grades: chance is 1/3
    for bad in (-1.0, float("nan"), 101.0, "heavy", True):
        with pytest.raises(TeacherError, match=key):
            TeacherConfig(model="x", **{key: bad})


def test_cli_flags_reach_the_config(tmp_path: Path) -> None:
    from pinrel.cli import build_parser
    from pinrel.commands.teacher import resolve

    argv = ["teacher", "train", "--train", "t.csv", "--model", "m", "--out", str(tmp_path), "--seed", "3"]
    config, train, dev, out, _ = resolve(build_parser().parse_args(argv))
    assert (config.seed, train, dev, out) == (3, "t.csv", None, str(tmp_path))
    assert resolve(build_parser().parse_args(argv[:-2]))[0].seed == 0  # the config's default
    with pytest.raises(TeacherError, match="seed"):
        resolve(build_parser().parse_args([*argv[:-1], "-1"]))
    config = resolve(build_parser().parse_args([*argv, "--max-failures", "0"]))[0]
    assert (config.max_failures, resolve(build_parser().parse_args(argv))[0].max_failures) == (0, 1)
    for bad in ("-1", "2.5"):
        with pytest.raises((TeacherError, SystemExit)):
            resolve(build_parser().parse_args([*argv, "--max-failures", bad]))
    with pytest.raises(TeacherError, match="max_failures"):
        TeacherConfig(model="x", max_failures=-1)
    assert resolve(build_parser().parse_args([*argv, "--pooling", "mean"]))[0].pooling == "mean"
    assert resolve(build_parser().parse_args(argv))[0].pooling is None  # auto
    with pytest.raises(SystemExit):
        resolve(build_parser().parse_args([*argv, "--pooling", "max"]))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("title,label\nred mug,5\n", "query"),
        ("query,title,label\nmug,red mug,7\n", "outside 1..5"),
        ("query,title,label\nmug,red mug,\n", "unlabeled"),
        ("", "empty"),
    ],
    ids=["missing-query", "label-out-of-range", "no-labels", "empty-file"],
)
def test_bad_records_fail_before_training(
    tmp_path: Path, bert_model: Path, content: str, message: str
) -> None:
    bad = _write_csv(tmp_path / "bad.csv", content)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        train_teacher(bad, None, config(bert_model), out)
    assert not (out / "_ray").exists()


def test_bad_model_and_config_fail_before_training(tmp_path: Path, data: dict[str, Any]) -> None:
    with pytest.raises(TeacherError, match="does not exist"):
        train_teacher(data["train"], None, config(tmp_path / "no-such-model"), tmp_path / "out")
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(TeacherError, match=r"config\.json"):
        train_teacher(data["train"], None, config(tmp_path / "empty-model"), tmp_path / "out")
    with pytest.raises(TeacherError, match=r"unknown key.*'epoch'"):
        TeacherConfig.from_dict({"model": "x", "epoch": 3})
    with pytest.raises(TeacherError, match="needs a GPU"):
        TeacherConfig(model="x", load_in_4bit=True)
    with pytest.raises(TeacherError, match="grades"):
        TeacherConfig(model="x", grades=1)
    with pytest.raises(TeacherError, match="lr"):
        TeacherConfig(model="x", lr=-1.0)
    assert not (tmp_path / "out").exists()


def test_grades_must_match_the_records(tmp_path: Path, data: dict[str, Any], bert_model: Path) -> None:
    with pytest.raises(TeacherError, match=r"graded 1\.\.5 but the teacher has grades=4"):
        train_teacher(data["train"], None, config(bert_model, grades=4), tmp_path / "out")


def test_yaml_config(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    shipped = TeacherConfig.from_yaml(repo / "train" / "teacher.yaml")
    assert shipped.model and shipped.grades == 5 and shipped.lora is None
    flat = _write_csv(tmp_path / "flat.yaml", "model: some/model\nepochs: 3\nlr: 1e-4\n")
    loaded = TeacherConfig.from_yaml(flat, epochs=4)
    assert loaded.epochs == 4 and loaded.lr == 1e-4  # a number, though YAML 1.1 reads a string
    typo = _write_csv(tmp_path / "typo.yaml", "teacher:\n  model: m\n  learning_rate: 1e-4\n")
    with pytest.raises(TeacherError, match="learning_rate"):
        TeacherConfig.from_yaml(typo)


def test_cli_reports_bad_input_clearly(
    tmp_path: Path, bert_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write_csv(tmp_path / "bad.csv", "query,title,label\nmug,red mug,9\n")
    code = cli_main(
        [
            "teacher",
            "train",
            "--train",
            str(bad),
            "--model",
            str(bert_model),
            "--out",
            str(tmp_path / "out"),
            "--epochs",
            "1",
            "--no-lora",
        ]
    )
    assert code == 2
    assert "label 9 is outside 1..5" in capsys.readouterr().err
    assert cli_main(["teacher", "train", "--train", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "'model' is required" in capsys.readouterr().err


def test_train_entrypoint_parses_yaml(
    tmp_path: Path, bert_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    repo = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("train_teacher_entry", repo / "train" / "teacher.py")
    assert spec is not None and spec.loader is not None
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    cfg = _write_csv(
        tmp_path / "t.yaml",
        f"data:\n  train: {tmp_path / 'missing.csv'}\n  out: {tmp_path / 'o'}\n"
        f"teacher:\n  model: {bert_model}\n",
    )
    assert entry.main(["--config", str(cfg)]) == 2
    assert "missing.csv" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ bad model dirs


def test_load_teacher_rejects_bad_dirs(tmp_path: Path, bert_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = bert_run
    with pytest.raises(ModelDirError, match=r"pinrel\.json"):
        load_teacher(tmp_path)
    wrong = tmp_path / "wrong-kind"
    shutil.copytree(out, wrong, ignore=shutil.ignore_patterns("_ray"))
    manifest = json.loads((wrong / "pinrel.json").read_text())
    (wrong / "pinrel.json").write_text(json.dumps({**manifest, "kind": "student"}))
    with pytest.raises(ModelDirError, match="not a teacher"):
        load_teacher(wrong)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(out, corrupt, ignore=shutil.ignore_patterns("_ray"))
    weights = corrupt / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelDirError, match=r"cannot load|corrupt"):
        load_teacher(corrupt, progress=False)
    shutil.rmtree(corrupt / "model")
    with pytest.raises(ModelDirError, match="does not exist"):
        load_teacher(corrupt, progress=False)
