"""call-back work: each item's kind, place in line, due time and last outcome; its tries; the queue's answered waits

Missed transfers become call-back items beside the requests callers make (kind missed, requested,
queue); agents work them in due order and record each try. The requests already stored become
items of kind requested, in line and due from when they were made.

Revision ID: 0010_callback_work
Revises: 0009_account_password_change
Create Date: 2026-12-02 12:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_callback_work'
down_revision = '0009_account_password_change'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('callback_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default=sa.text("'requested'"),
                                      nullable=False))
        batch_op.add_column(sa.Column('queued_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('due_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('outcome', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_callback_requests_open_due', ['done_at', 'due_at'], unique=False)
    op.execute("UPDATE callback_requests SET queued_at = created_at, due_at = created_at WHERE due_at IS NULL")

    op.create_table('callback_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('request_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('agent', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['callback_requests.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('callback_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_callback_attempts_request_id'), ['request_id'], unique=False)

    op.create_table('queue_waits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=False),
    sa.Column('hotline', sa.String(length=32), nullable=False),
    sa.Column('answered_at', sa.DateTime(), nullable=False),
    sa.Column('seconds', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('queue_waits', schema=None) as batch_op:
        batch_op.create_index('ix_queue_waits_hotline_at', ['hotline', 'answered_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('queue_waits', schema=None) as batch_op:
        batch_op.drop_index('ix_queue_waits_hotline_at')
    op.drop_table('queue_waits')
    with op.batch_alter_table('callback_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_callback_attempts_request_id'))
    op.drop_table('callback_attempts')
    with op.batch_alter_table('callback_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_callback_requests_open_due')
        batch_op.drop_column('outcome')
        batch_op.drop_column('due_at')
        batch_op.drop_column('queued_at')
        batch_op.drop_column('kind')
