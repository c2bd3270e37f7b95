"""call reports: the caller's number as a keyed hash on each call (repeat callers), by number and time

Revision ID: 0006_call_reports
Revises: 0005_two_factor
Create Date: 2026-12-01 10:50:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_call_reports'
down_revision = '0005_two_factor'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('from_key', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_calls_from_key', ['from_key', 'started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_from_key')
        batch_op.drop_column('from_key')
