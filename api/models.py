"""Every table, imported in one place for Alembic and the drift test."""

from sqlmodel import SQLModel

from api.access.models import Grant
from api.audit.models import AuditEvent
from api.bookings.models import Booking, BookingClient, PhoneVerification
from api.buildings.models import Building, Door, DoorStatus, Holiday
from api.events.models import GatewayEventGap, GatewayEventRecord
from api.gateways.models import Gateway
from api.groups.models import Group, GroupMember
from api.identity.models import User
from api.limits.models import RateLimitBucket
from api.offline.models import OfflineToken
from api.owners.models import ManagerScope, Owner
from api.public_access.models import PublicAccess

metadata = SQLModel.metadata

__all__ = [
    "AuditEvent",
    "Booking",
    "BookingClient",
    "Building",
    "Door",
    "DoorStatus",
    "Gateway",
    "GatewayEventGap",
    "GatewayEventRecord",
    "Grant",
    "Group",
    "GroupMember",
    "Holiday",
    "ManagerScope",
    "OfflineToken",
    "Owner",
    "PhoneVerification",
    "PublicAccess",
    "RateLimitBucket",
    "User",
    "metadata",
]
