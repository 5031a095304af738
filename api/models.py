"""Every table, imported in one place for Alembic and the drift test."""

from sqlmodel import SQLModel

from api.access.models import Grant
from api.audit.models import AuditEvent
from api.buildings.models import Building, Door
from api.gateways.models import Gateway
from api.identity.models import User

metadata = SQLModel.metadata

__all__ = ["AuditEvent", "Building", "Door", "Gateway", "Grant", "User", "metadata"]
