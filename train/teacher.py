"""Ray job entrypoint for teacher training.

    ray job submit --working-dir . -- python train/teacher.py --config train/teacher.yaml

Thin on purpose: it reads the YAML (the `teacher:` settings and `data:` paths), lets a few flags override the
data paths, and calls `pinrel.teacher.train_teacher`, which connects to the cluster named by RAY_ADDRESS
(set by `ray job submit`) or starts a local Ray. Under `--working-dir`, data paths must be absolute: the job
runs in an uploaded copy of the working dir.
"""

from __future__ import annotations

import argparse
import json
import sys

from pinrel.jobs import check_job_paths, run_entrypoint
from pinrel.records import parse_mapping
from pinrel.teacher import TeacherConfig, load_yaml_sections, train_teacher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config", default="train/teacher.yaml", help="YAML with teacher: and data: sections"
    )
    parser.add_argument("--train", help="override data.train")
    parser.add_argument("--dev", help="override data.dev")
    parser.add_argument("--out", help="override data.out")
    parser.add_argument("--fresh", action="store_true", help="ignore an earlier checkpoint in the output dir")
    parser.add_argument(
        "--max-failures", type=int, help="override teacher.max_failures (worker restarts from a checkpoint)"
    )
    args = parser.parse_args(argv)

    teacher, data = load_yaml_sections(args.config)
    config = TeacherConfig.from_dict(teacher, max_failures=args.max_failures)
    train, dev, out = (
        args.train or data.get("train"),
        args.dev or data.get("dev"),
        args.out or data.get("out"),
    )
    if not train or not out:
        parser.error("data.train and data.out must be set in the config (or pass --train/--out)")
    check_job_paths({"train": train, "dev": dev, "out": out})
    mapping = parse_mapping(f"{src}={dst}" for src, dst in (data.get("mapping") or {}).items())
    manifest = train_teacher(train, dev, config, out, mapping=mapping or None, resume=not args.fresh)
    print(json.dumps({"out": out, "epochs": manifest["epochs"], "metrics": manifest["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(run_entrypoint("train/teacher.py", main))
