"""The teacher: a pretrained transformer fine-tuned as a K-way relevance cross-encoder on Ray Train.

A decoder LLM (Llama, Qwen, ...) is adapted with LoRA and pools its last non-pad token; an encoder (BERT,
MiniLM, XLM-R) is fully fine-tuned and pools [CLS], or the mean of its token states when it is a sentence
encoder trained on that mean (`pinrel.pooled`). Both see one text per pair, built by the Rust assembler
from the query and the item fields, so the teacher, the labeler and the student read the same words.

`train_teacher` checks every input on the driver before any worker starts, trains under
`ray.train.torch.TorchTrainer` with a checkpoint (weights in safetensors, optimizer state as tensors) each
epoch, resumes an unfinished run found in the output directory, and writes a self-contained model directory:

    out_dir/model/      merged *ForSequenceClassification (safetensors) + tokenizer, for transformers and vLLM
                        (a mean-pooled encoder: pinrel's own model type, for transformers only)
    out_dir/adapter/    the LoRA adapter alone (only when LoRA was used)
    out_dir/pinrel.json manifest: kind "teacher", grades, base model, assembly spec, dev metrics per epoch
    out_dir/_ray/       Ray Train's run folder (checkpoints); delete it once the model is final

The package's modules, in the order the data flows: `config` (settings, the resolved base model, the
run's fingerprint), `data` (records, pair texts, batches), `model` (the model with its head, checkpoint
files), `loop` (each Ray Train worker's loop), `train` (the driver and the export), `predictor`
(loading a trained teacher).
"""

from __future__ import annotations

from .config import TeacherConfig, TeacherError, load_yaml_sections
from .predictor import TeacherPredictor, load_teacher
from .train import train_teacher

__all__ = [
    "TeacherConfig",
    "TeacherError",
    "TeacherPredictor",
    "load_teacher",
    "load_yaml_sections",
    "train_teacher",
]
