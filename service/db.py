from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """The unit of work: one transaction per request, committed before the response is sent."""
    maker: async_sessionmaker[AsyncSession] = request.app.state.db_maker
    async with maker() as db, db.begin():
        yield db


# scope="function" closes the dependency (and so commits) before the response goes out:
# a failed commit then reaches the client as an error, never as a success.
Db = Annotated[AsyncSession, Depends(get_db, scope="function")]
