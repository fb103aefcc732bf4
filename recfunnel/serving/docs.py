"""The API documentation pages (``/docs``, ``/redoc``), served without any network.

FastAPI's default pages load Swagger UI and ReDoc from a CDN, so behind a firewall or
offline ``/docs`` is blank. Here the JavaScript, CSS and favicon come from the
``fastapi-offline`` package (pinned in ``pyproject.toml``), mounted as static files
under :data:`STATIC_URL`, and the pages reference only those local paths.

The pages, the assets and ``/openapi.json`` need no API key, as FastAPI's own
pages did: they describe the API, and every endpoint they call checks its key.
"""

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

#: where the documentation assets are served
STATIC_URL = "/docs-static"

#: the package and its folder holding swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js, favicon.png
ASSETS_PACKAGE = ("fastapi_offline", "static")

#: Swagger UI options: no call to the online spec validator (it needs the network)
SWAGGER_UI_PARAMETERS = {"validatorUrl": None}


def add_offline_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str | None = "/redoc") -> None:
    """Serve Swagger UI at ``docs_url`` and ReDoc at ``redoc_url`` from local assets.

    ``app`` must be made with ``docs_url=None, redoc_url=None`` (no CDN pages).
    """
    app.mount(STATIC_URL, StaticFiles(packages=[ASSETS_PACKAGE]), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url

    def prefix(request: Request) -> str:
        return request.scope.get("root_path", "") or ""

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = prefix(request)
        return get_swagger_ui_html(
            openapi_url=root + openapi_url, title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=None if redirect_url is None else root + redirect_url,
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            swagger_ui_parameters={**SWAGGER_UI_PARAMETERS, **(app.swagger_ui_parameters or {})})

    if redirect_url is not None:
        @app.get(redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    if redoc_url is not None:
        @app.get(redoc_url, include_in_schema=False)
        async def redoc(request: Request) -> HTMLResponse:
            root = prefix(request)
            return get_redoc_html(
                openapi_url=root + openapi_url, title=f"{app.title} - ReDoc",
                redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
                redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png", with_google_fonts=False)
