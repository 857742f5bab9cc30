"""The serving bench's baseline: the same student and request handling behind plain FastAPI + uvicorn, no Ray.

Run as `python benches/plain_fastapi_app.py MODEL_DIR PORT`.
"""

import asyncio
import os
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from pinrel.serving import (
    DEFAULTS,
    check_limits,
    configure_threads,
    parse_score_request,
    render_response,
    validation_error,
)
from pinrel.student import Scorer

configure_threads(os.cpu_count() or 1)  # as a Serve replica does with its reserved CPUs
scorer = Scorer.load(sys.argv[1])
app = FastAPI()
app.add_exception_handler(RequestValidationError, validation_error)


@app.post("/v1/score")
async def score(request: Request) -> Response:
    # What a Serve replica does per request, minus Ray: parse, limits, featurize + forward, render.
    req = parse_score_request(await request.body())
    check_limits(req, DEFAULTS["max_items"], DEFAULTS["max_field_chars"])
    scores = await asyncio.to_thread(scorer.score, req.query, req.items)
    return render_response("plain", req, scores)


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
