"""Storage: SQLAlchemy engine and sessions, ORM tables, Alembic migrations."""
