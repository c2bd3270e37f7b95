"""accounts: a password an admin handed over must be replaced by its owner at the next login

Revision ID: 0009_account_password_change
Revises: 0008_holder_search
Create Date: 2026-12-01 14:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0009_account_password_change'
down_revision = '0008_holder_search'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agent_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('must_change_password', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('agent_accounts', schema=None) as batch_op:
        batch_op.drop_column('must_change_password')
