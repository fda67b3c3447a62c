"""A callback receiver for tests: verifies signatures, appends each callback to a JSONL file.

Served by `certified serve tests.psik.receiver:app` (mTLS). Environment:
PSIK_RECEIVER_SECRET (HMAC secret), PSIK_RECEIVER_LOG (JSONL output),
PSIK_RECEIVER_FAIL_FIRST (answer 503 to that many first requests; default 0).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request

from certified.asgi import client_identity
from psik.callbacks import read_callback
from psik.signing import HEADER

SECRET = os.environ.get("PSIK_RECEIVER_SECRET", "")
LOG = Path(os.environ.get("PSIK_RECEIVER_LOG", "callbacks.jsonl"))
FAIL_FIRST = int(os.environ.get("PSIK_RECEIVER_FAIL_FIRST", "0"))

app = FastAPI()
_seen = {"requests": 0}


@app.post("/cb")
async def callback(request: Request, identity: str = Depends(client_identity)) -> dict:
    _seen["requests"] += 1
    if _seen["requests"] <= FAIL_FIRST:
        raise HTTPException(503, detail="failing on purpose")
    body = await request.body()
    try:
        cb = read_callback(SECRET, body, request.headers.get(HEADER))
    except PermissionError as exc:
        raise HTTPException(401, detail=str(exc)) from None
    except ValueError as exc:
        raise HTTPException(422, detail=str(exc)) from None
    line = {
        **cb.model_dump(mode="json"),
        "identity": identity,
        "tag": request.headers.get("x-test-tag"),  # a JobSpec cb_headers entry, if sent
        "attempt": _seen["requests"],
        "received": time.time(),
    }
    with open(LOG, "a") as fh:
        fh.write(json.dumps(line) + "\n")
    return {"ok": True}
