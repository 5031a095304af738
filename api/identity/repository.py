"""Users in the database, as sign-in needs them."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.models import Role, User


async def ensure_user(
    session: AsyncSession, user_id: str, display_name: str, *, rename: bool = False
) -> User:
    """The user ``user_id``, created as a citizen on first sign-in (``rename``: an existing
    user takes ``display_name`` too). Two first sign-ins at once both end with the one row
    (the loser's insert is rolled back to a savepoint)."""
    user = await session.get(User, user_id)
    if user is not None:
        if rename and user.display_name != display_name:
            user.display_name = display_name
        return user
    try:
        async with session.begin_nested():
            user = User(id=user_id, display_name=display_name, roles=[Role.CITIZEN.value])
            session.add(user)
    except IntegrityError:
        user = await session.get(User, user_id, populate_existing=True)
        if user is None:
            raise
    return user
