"""The manager console under /console: one router per page, gathered here.

Pages (see docs/web.md): overview with live door status, grants and groups, opening hours
with holidays, bookings, lockdown, audit log with CSV export, gateway provisioning.
"""

from fastapi import APIRouter

from api.web.console import audit, bookings, calendar, gateways, grants, lockdown, overview

router = APIRouter(include_in_schema=False)
for page in (overview, grants, calendar, bookings, lockdown, audit, gateways):
    router.include_router(page.router)
