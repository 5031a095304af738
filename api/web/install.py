"""Mounts the web app on the API: sessions, static files, the sign-in redirect, the routers."""

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from api.settings import Settings
from api.web import auth
from api.web.citizen import router as citizen_router
from api.web.console import router as console_router
from api.web.session import SESSION_COOKIE, CsrfFailedError, SignInRequiredError, session_secret
from api.web.templating import WEB_DIR, render


def _wants_html(request: Request) -> bool:
    # fetch() from app.js asks for JSON; a browser navigation asks for HTML.
    return "text/html" in request.headers.get("accept", "") and not request.headers.get(
        "x-requested-with"
    )


def install_web(app: FastAPI, settings: Settings) -> None:
    """Add the web app (citizen PWA under /app, manager console under /console)."""
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_max_age_s,
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    app.mount("/static", StaticFiles(directory=WEB_DIR / "static"), name="static")

    @app.exception_handler(SignInRequiredError)
    async def _sign_in_first(request: Request, exc: SignInRequiredError) -> Response:
        if _wants_html(request):
            return RedirectResponse(f"/app/login?next={exc.next_path}", status_code=303)
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "sign in first"}}, status_code=401
        )

    @app.exception_handler(CsrfFailedError)
    async def _form_expired(request: Request, exc: CsrfFailedError) -> Response:
        # A browser posting a stale form gets a page with a way back, not a JSON body.
        if _wants_html(request):
            path = request.url.path
            back = "/console" if path.startswith("/console") else "/app"
            return render(request, "form_expired.html", {"back": back}, status_code=403)
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}}, status_code=exc.status
        )

    @app.get("/", include_in_schema=False)
    async def _home() -> RedirectResponse:
        return RedirectResponse("/app", status_code=307)

    app.include_router(auth.router)
    app.include_router(citizen_router.router)
    app.include_router(console_router.router)
