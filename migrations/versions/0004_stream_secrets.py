"""stream_secrets: the key that signs stream tokens, shared by every API process

Revision ID: 0004_stream_secrets
Revises: 0003_recovery
Create Date: 2026-12-03

Without ``RUNSTREAM_SECRET`` each API process used to sign with a random key of
its own, so a token died with its process and was refused by every other
replica. Now the first API process to start makes one and keeps it here; every
process signs with the newest row and accepts tokens of any row, so
``runstream rotate-secret`` adds a key without breaking tokens already handed out.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_stream_secrets"
down_revision = "0003_recovery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stream_secrets",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("secret", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.TIMESTAMP(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("length(secret) >= 32", name="stream_secrets_long_enough"),
    )


def downgrade() -> None:
    op.drop_table("stream_secrets")
