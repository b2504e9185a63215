"""The teaching side of the JSON API: `POST /api/learn`, `/api/clips`, `/api/remove` and
`/api/undo`, each answered `202` with a job, and `/api/jobs` to follow them. The work
is the `Teacher`'s; these handlers only check the request's shape."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .guard import ServeConfig, error_response
from .jobs import Refused
from .teach import Teacher

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 that says what to send."""
    try:
        body = json.loads(await request.body() or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Refused(400, f"the body is not JSON ({e.msg if hasattr(e, 'msg') else e}); send e.g. "
                           "{\"name\": \"wave hello\"}") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object, e.g. {\"name\": \"wave hello\"}")
    return body


def accepted(job: Any) -> JSONResponse:
    """202 with the job, where to follow it in Location."""
    return JSONResponse({"job": job.id, **job.public()}, status_code=202,
                        headers={"Location": f"/api/jobs/{job.id}"})


def teach_routes(teacher: Teacher, config: ServeConfig) -> list[Route]:
    """The routes that change the device's classes, and the jobs they start."""
    async def learn(request: Request) -> Response:
        body = await json_body(request)
        unknown = set(body) - {"name", "windows", "replace"}
        if unknown:
            raise Refused(400, f"unknown field(s) {sorted(unknown)}; a learn request has name, windows, replace")
        if "name" not in body:
            raise Refused(400, "no \"name\": give the action's name, e.g. {\"name\": \"wave hello\", \"windows\": 8}")
        return accepted(teacher.submit_learn(body["name"], body.get("windows", 16), body.get("replace", True)))

    async def remove(request: Request) -> Response:
        body = await json_body(request)
        if "name" not in body:
            raise Refused(400, "no \"name\": give the class to remove, e.g. {\"name\": \"wave hello\"}")
        return accepted(teacher.submit_remove(body["name"]))

    async def undo(request: Request) -> Response:
        return accepted(teacher.submit_undo())

    async def clips(request: Request) -> Response:
        try:
            form = await request.form(max_files=config.max_upload_files, max_fields=8, max_part_size=4096)
        except ClientDisconnect:
            return error_response(400, "the upload was cut off")
        except HTTPException as e:  # too many files or fields
            raise Refused(413 if "Too many" in str(e.detail) else 400,
                          f"{e.detail}; send at most {config.max_upload_files} clips") from None
        folder = Path(tempfile.mkdtemp(prefix="stpr-upload-"))
        handed = False  # once a job has the folder, its thread deletes it after the tower pass
        try:
            name = form.get("name")
            files = [f for f in form.getlist("files") if not isinstance(f, str)]
            if not isinstance(name, str):
                raise Refused(400, "no \"name\" field: send the class name with the clips")
            if not files:
                raise Refused(400, "no clips: send video files in \"files\" fields")
            saved = []
            for i, upload in enumerate(files):  # our own names: no request value becomes a path
                ext = Path(upload.filename or "").suffix.lower()
                if ext not in VIDEO_EXTS:
                    raise Refused(400, f"upload {i + 1} is not a video file ({ext or 'no extension'}); send "
                                       f"{', '.join(sorted(VIDEO_EXTS))}")
                path = folder / f"clip-{i:03d}{ext}"
                with path.open("wb") as out:
                    await run_in_threadpool(shutil.copyfileobj, upload.file, out)
                saved.append(path)
            job = await run_in_threadpool(teacher.submit_clips, name, saved, folder)
            handed = True
            return accepted(job)
        finally:
            await form.close()
            if not handed:
                shutil.rmtree(folder, ignore_errors=True)

    async def job(request: Request) -> Response:
        j = teacher.jobs.get(request.path_params["id"])
        if j is None:
            raise Refused(404, f"no job {request.path_params['id']!r}; jobs are listed at /api/jobs")
        return JSONResponse(j.public(), headers={"Cache-Control": "no-store"})

    async def jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [j.public() for j in teacher.jobs.values()]},
                            headers={"Cache-Control": "no-store"})

    return [Route("/api/jobs", jobs), Route("/api/jobs/{id}", job),
            Route("/api/learn", learn, methods=["POST"]), Route("/api/clips", clips, methods=["POST"]),
            Route("/api/remove", remove, methods=["POST"]), Route("/api/undo", undo, methods=["POST"])]
