"""The API documentation pages (Swagger UI at ``/docs``, ReDoc at ``/redoc``), served with
their scripts and styles from this process: they work on a network with no way out.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so offline they are blank. The
assets here come from the ``fastapi-offline`` package, which ships current Swagger UI (5.x,
which renders OpenAPI 3.1) and ReDoc builds as package data; we use its files, not its app
factory, so these routes declare their access rule like every other route.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from basketball_api import access
from basketball_api.errors import NotFound

ASSETS_URL = "/docs/assets"
ASSET_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add /docs, /redoc and their assets to ``app`` (created with docs_url=redoc_url=None)."""
    router = APIRouter(include_in_schema=False, dependencies=[access.PUBLIC])
    title = f"{app.title} — API documentation"
    openapi_url = app.openapi_url or "/openapi.json"

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=title,
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            # No "valid" badge: Swagger UI would fetch it from validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=title,
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSET_FILES.get(name)
        if media_type is None:
            raise NotFound(f"no documentation asset {name!r}")
        return FileResponse(
            assets_dir() / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.include_router(router)
