"""holder search: the ID number's last four characters on each cardholder, by name and last four; by mobile

The console finds a holder by name plus the last four characters of the ID number, and by the
contact mobile. The column is filled for the holders already in the ledger.

Revision ID: 0008_holder_search
Revises: 0007_audit_trail
Create Date: 2026-12-02 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008_holder_search'
down_revision = '0007_audit_trail'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cardholders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('id_last4', sa.String(length=4), nullable=True))
    # ID numbers are 18 characters (models.identity.normalise_id): the last four start at the 15th.
    op.execute("UPDATE cardholders SET id_last4 = substr(id_number, 15, 4)")
    with op.batch_alter_table('cardholders', schema=None) as batch_op:
        batch_op.alter_column('id_last4', existing_type=sa.String(length=4), nullable=False)
        batch_op.create_index('ix_cardholders_name_last4', ['name', 'id_last4'], unique=False)
        batch_op.create_index(batch_op.f('ix_cardholders_mobile'), ['mobile'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cardholders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cardholders_mobile'))
        batch_op.drop_index('ix_cardholders_name_last4')
        batch_op.drop_column('id_last4')
