"""two-factor sign-in: the console accounts' TOTP secret (encrypted) and their recovery codes (hashed)

Revision ID: 0005_two_factor
Revises: 0004_console_security
Create Date: 2026-12-01 09:40:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_two_factor'
down_revision = '0004_console_security'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agent_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('totp_secret', sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column('totp_enrolled_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=True))

    op.create_table('agent_recovery_codes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('used_at', sa.DateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agent_accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('agent_recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_recovery_codes_agent_id'), ['agent_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('agent_recovery_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agent_recovery_codes_agent_id'))

    op.drop_table('agent_recovery_codes')
    with op.batch_alter_table('agent_accounts', schema=None) as batch_op:
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_enrolled_at')
        batch_op.drop_column('totp_secret')
