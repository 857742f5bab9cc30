"""The vLLM backend against the transformers one, on a tiny Llama teacher.

vLLM cannot live in the main venv (its CPU build needs a different torch), so the vLLM half runs in a
subprocess with `.venv-vllm/bin/python` (built by `tools/vllm_env.sh`, or set PINREL_VLLM_VENV) and writes its
outputs to a file; the reference comes from HFBackend here, in the main venv, so the comparison also spans two
torch and transformers versions. Without that venv the vLLM tests skip and say why.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from pinrel.backends.vllm import INSTALL_HINT, VLLMBackend, resolve_model_dir
from pinrel.predictor import ModelDirError, write_manifest
from pinrel.testing import tiny_llama

REPO = Path(__file__).resolve().parent.parent
VLLM_VENV = Path(os.environ.get("PINREL_VLLM_VENV", REPO / ".venv-vllm"))
VLLM_PYTHON = VLLM_VENV / "bin" / "python"
# tools/vllm_env.sh writes this last, after its import check; a venv it built without it is half-made.
# A venv named by PINREL_VLLM_VENV may come from elsewhere, so only the subprocess's imports judge that one.
VLLM_STAMP = VLLM_VENV / ".pinrel-vllm-env"
VLLM_BUILT_HERE = "PINREL_VLLM_VENV" not in os.environ
# Where tools/vllm_env.sh leaves the reason its last build failed.
VLLM_ERROR = VLLM_VENV.with_name(VLLM_VENV.name + ".error")
# The subprocess exits with this when `import vllm` fails there, so the test can skip instead of failing.
NO_VLLM = 77
MAX_LENGTH = 48
GRADES = 5

TEXTS = [
    "query: red mug [SEP] title: Red ceramic mug | description: Holds 350 ml",
    "query: 東京タワー [SEP] title: 東京タワーの夜景 | boards: Travel Japan",
    "query: garden chair [SEP] title: Folding teak chair for the patio",
    "query: x [SEP] title: y",
    "query: lamp [SEP] title: " + "brass desk lamp with a linen shade and a long cable " * 8,  # > MAX_LENGTH
    "query: café [SEP] title: Café au lait bowl, hand-thrown stoneware",
]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A teacher dir around a tiny random Llama (head_dim 32: vLLM's CPU attention needs 32, 64, 80...)."""
    root = tmp_path_factory.mktemp("vllm-teacher")
    tiny_llama(root / "model", TEXTS * 4, grades=GRADES)
    write_manifest(root, {"kind": "teacher", "grades": GRADES, "max_length": MAX_LENGTH})
    return root


# ------------------------------------------------------------------------------------ no vLLM needed


def test_resolve_model_dir_accepts_teacher_and_plain_folders(teacher: Path) -> None:
    folder, manifest = resolve_model_dir(teacher)
    assert folder == teacher / "model"
    assert manifest is not None and manifest["grades"] == GRADES
    folder, manifest = resolve_model_dir(teacher / "model")
    assert folder == teacher / "model" and manifest is None


def test_resolve_model_dir_rejects_what_vllm_cannot_serve(teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match="does not exist"):
        resolve_model_dir(tmp_path / "missing")
    with pytest.raises(ModelDirError, match=r"no config\.json"):
        resolve_model_dir(tmp_path)
    student = tmp_path / "student"
    student.mkdir()
    write_manifest(student, {"kind": "student", "grades": GRADES})
    with pytest.raises(ModelDirError, match="teachers only"):
        resolve_model_dir(student)
    hollow = tmp_path / "hollow"
    hollow.mkdir()
    (hollow / "config.json").write_text((teacher / "model" / "config.json").read_text())
    with pytest.raises(ModelDirError, match="no weights"):
        resolve_model_dir(hollow)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is importable in this venv")
@pytest.mark.parametrize("share", [0, -0.5, 1.5, float("nan"), "half"])
def test_a_bad_memory_share_is_refused_before_vllm_loads(teacher: Path, share: object) -> None:
    with pytest.raises(ValueError, match="memory_share: expected a number in"):
        VLLMBackend(teacher, memory_share=share)  # type: ignore[arg-type]


def test_without_vllm_the_error_says_how_to_install_it(teacher: Path) -> None:
    assert "tools/vllm_env.sh" in INSTALL_HINT and "pinrel[vllm]" in INSTALL_HINT
    with pytest.raises(ImportError, match=r"pinrel\[vllm\].*tools/vllm_env\.sh"):
        VLLMBackend(teacher)


def test_the_vllm_env_script_will_not_fill_the_disk(tmp_path: Path) -> None:
    """Without room for torch and vLLM it stops before creating anything, and says how much it wanted."""
    venv = tmp_path / "venv"
    env = {**os.environ, "PINREL_VLLM_MIN_FREE_GB": "1000000"}
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "vllm_env.sh"), str(venv)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert f"needs about 1000000 GB free at {tmp_path.resolve()}" in proc.stderr
    assert "vLLM tests will skip" in proc.stderr
    assert not venv.exists()
    # The reason stays beside where the venv would be, for the vLLM tests' skip message.
    assert "needs about 1000000 GB free" in (tmp_path / "venv.error").read_text()


# ------------------------------------------------------------------------------ vLLM in its own venv

# Runs under .venv-vllm: builds the backend twice (teacher dir through get_backend, then the plain HF folder)
# and saves everything the assertions need. The second engine starts while the first is alive, with half the
# memory budget, as the teachers of an ensemble share one device in the labeler.
VLLM_SCRIPT = (
    textwrap.dedent(
        """
    import json, sys, time

    # A venv whose build stopped half-way may lack numpy as well as vLLM: either means "no vLLM here".
    try:
        import numpy as np
        import vllm  # noqa: F401
    except Exception as e:
        print(f"import failed: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(NO_VLLM)

    from pinrel.backends import get_backend
    from pinrel.backends.vllm import VLLMBackend

    teacher, out, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = {}
    t0 = time.perf_counter()
    backend = get_backend("vllm", teacher + "/model", max_length=MAX_LENGTH, max_tokens=1024, progress=False)
    result["startup_s"] = time.perf_counter() - t0
    result["type"] = f"{type(backend).__module__}.{type(backend).__qualname__}"
    result["is_vllm_backend"] = isinstance(backend, VLLMBackend)
    result["grades"] = backend.grades
    result["max_model_len"] = backend.max_model_len
    probs = backend.predict_proba(texts)
    logits = backend.predict_logits(texts)
    empty = backend.predict_proba([])
    result["stats"] = backend.stats.as_dict()
    try:
        backend.embed(texts[:2])
        result["embed_error"] = None
    except NotImplementedError as e:
        result["embed_error"] = str(e)

    t0 = time.perf_counter()
    with VLLMBackend(teacher, progress=False, memory_share=0.5) as from_teacher_dir:
        result["teacher_dir_startup_s"] = time.perf_counter() - t0
        result["teacher_dir_max_model_len"] = from_teacher_dir.max_model_len
        result["shares"] = [b.llm_kwargs["gpu_memory_utilization"] for b in (backend, from_teacher_dir)]
        probs_teacher_dir = from_teacher_dir.predict_proba(texts)
        result["first_still_serves"] = bool(np.allclose(backend.predict_proba(texts), probs, atol=1e-6))
    backend.close()
    np.savez(out, probs=probs, logits=logits, empty=empty, probs_teacher_dir=probs_teacher_dir)
    print("RESULT " + json.dumps(result))
    """
    )
    .replace("NO_VLLM", str(NO_VLLM))
    .replace("MAX_LENGTH", str(MAX_LENGTH))
)


def _vllm_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    # The checkout's pinrel, not the copy installed into .venv-vllm when it was built (it may be stale); the
    # compiled core is there once `make install` ran.
    if any((REPO / "python" / "pinrel").glob("_native*.so")):
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "python"), env.get("PYTHONPATH")) if p)
    # One process instead of three: each spawned engine process re-imports vLLM (~30 s apiece on 2 CPUs).
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; plenty for six short prompts
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


@pytest.fixture(scope="module")
def vllm_run(teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[str, np.ndarray]]:
    failed = (
        f"; its build failed: {VLLM_ERROR.read_text(errors='replace')[:1000].strip()}"
        if VLLM_ERROR.is_file()
        else ""
    )
    if not VLLM_PYTHON.is_file():
        pytest.skip(
            f"no vLLM venv at {VLLM_VENV} (build it with `make vllm-env` or tools/vllm_env.sh){failed}"
        )
    if VLLM_BUILT_HERE and not VLLM_STAMP.is_file():
        pytest.skip(
            f"the vLLM venv at {VLLM_VENV} is unfinished: tools/vllm_env.sh stopped before its last check "
            f"(`make vllm-env` retries){failed}"
        )
    out = tmp_path_factory.mktemp("vllm-out") / "out.npz"
    started = time.perf_counter()
    proc = subprocess.run(
        [str(VLLM_PYTHON), "-c", VLLM_SCRIPT, str(teacher), str(out), json.dumps(TEXTS)],
        env=_vllm_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode == NO_VLLM:
        pytest.skip(f"no usable vLLM in {VLLM_PYTHON}: {proc.stderr.strip().splitlines()[-1]}")
    if proc.returncode != 0:
        pytest.fail(f"the vLLM subprocess failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    result["wall_s"] = time.perf_counter() - started
    print(
        f"vLLM subprocess: {result['wall_s']:.0f} s in all; engine start-ups {result['startup_s']:.0f} s "
        f"and {result['teacher_dir_startup_s']:.0f} s"
    )
    with np.load(out) as arrays:
        return result, {k: arrays[k] for k in arrays.files}


@pytest.fixture(scope="module")
def hf_reference(teacher: Path) -> tuple[np.ndarray, np.ndarray, int]:
    from pinrel.backends.hf import HFBackend

    hf = HFBackend(teacher / "model", max_length=MAX_LENGTH, progress=False)
    full = [len(ids) for ids in hf.tokenizer(TEXTS)["input_ids"]]
    assert max(full) > MAX_LENGTH, f"no text is long enough to test truncation: {full}"
    probs = hf.predict_proba(TEXTS)
    tokens = hf.stats.tokens  # real (unpadded) tokens of one pass over TEXTS
    return probs, hf.predict_logits(TEXTS), tokens


def test_get_backend_vllm_returns_a_vllm_backend(vllm_run: tuple[dict, dict]) -> None:
    result, _ = vllm_run
    assert result["is_vllm_backend"], result["type"]
    assert result["grades"] == GRADES
    assert result["max_model_len"] == MAX_LENGTH


def test_vllm_probabilities_match_transformers(vllm_run: tuple[dict, dict], hf_reference: tuple) -> None:
    _, arrays = vllm_run
    ref_probs, ref_logits, _ = hf_reference
    probs = arrays["probs"]
    assert probs.dtype == np.float32 and probs.shape == (len(TEXTS), GRADES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The over-long text only matches if vLLM truncates to max_length exactly like the HF tokenizer does.
    print(f"max |vLLM - HF| probability difference: {np.abs(probs - ref_probs).max():.2e}")
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    np.testing.assert_allclose(arrays["logits"], ref_logits, atol=1e-4)
    assert arrays["empty"].shape == (0, GRADES)


def test_a_teacher_dir_gives_the_same_probabilities(vllm_run: tuple[dict, dict], hf_reference: tuple) -> None:
    result, arrays = vllm_run
    assert result["teacher_dir_max_model_len"] == MAX_LENGTH  # taken from pinrel.json
    np.testing.assert_allclose(arrays["probs_teacher_dir"], hf_reference[0], atol=1e-4)


def test_two_engines_share_the_memory_budget_and_both_serve(vllm_run: tuple[dict, dict]) -> None:
    result, _ = vllm_run
    full, half = result["shares"]
    assert half == pytest.approx(full / 2)
    assert result["first_still_serves"]


def test_vllm_stats_count_real_tokens_and_no_padding(
    vllm_run: tuple[dict, dict], hf_reference: tuple
) -> None:
    stats = vllm_run[0]["stats"]
    # predict_proba and predict_logits each saw every text once; the empty call counts nothing.
    assert stats["pairs"] == 2 * len(TEXTS)
    assert stats["tokens"] == 2 * hf_reference[2]
    assert stats["padded_tokens"] == stats["tokens"] and stats["padding_waste"] == 0.0
    assert stats["seconds"] > 0


def test_vllm_embed_on_a_classifier_says_to_use_hf(vllm_run: tuple[dict, dict]) -> None:
    message = vllm_run[0]["embed_error"]
    assert message is not None, "vLLM unexpectedly embedded with a *ForSequenceClassification checkpoint"
    assert "'embed'" in message and "get_backend('hf'" in message


if __name__ == "__main__":  # pragma: no cover - handy for timing the vLLM half alone
    sys.exit(pytest.main([__file__, "-v", "-s"]))
