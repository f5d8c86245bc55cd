from alembic import context
from sqlalchemy import create_engine, pool


def database_url() -> str:
    # db/migrate.py puts the URL on the config; Alembic itself reads no environment.
    configured = context.config.get_main_option("sqlalchemy.url")
    if configured is None:
        raise RuntimeError("no database URL: run the migrations with `runstream migrate`")
    return configured


url = database_url()


def run_migrations_offline() -> None:
    context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
