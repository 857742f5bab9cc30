"""The serving bench's baseline: the same student behind plain FastAPI + uvicorn, no Ray.

Run as `python benches/plain_fastapi_app.py MODEL_DIR PORT`.
"""

import asyncio
import sys

import uvicorn
from fastapi import FastAPI

from pinrel.serving import ScoreRequest
from pinrel.student import Scorer

scorer = Scorer.load(sys.argv[1])
app = FastAPI()


@app.post("/v1/score")
async def score(req: ScoreRequest) -> dict:
    items = [i.model_dump(exclude={"id"}, exclude_none=True) for i in req.items]
    probs = await asyncio.to_thread(scorer.predict_proba, [{"query": req.query, **i} for i in items])
    grades = range(1, probs.shape[1] + 1)
    results = [
        {"id": it.id, "index": k, "score": float(sum(g * p for g, p in zip(grades, row, strict=True)))}
        for k, (it, row) in enumerate(zip(req.items, probs, strict=True))
    ]
    results.sort(key=lambda r: -r["score"])
    return {"results": results}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
