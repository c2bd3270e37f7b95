"""audit trail: the card and call an action was on, the client's address, indexes for the filters; append-only triggers

The codes the console stored before (2fa_enrol, 2fa_disable, 2fa_recovery_new, 2fa_reset,
2fa_recovery_used) become models.vocabulary.AuditAction's (a recovery code used was a login), so
the trail reads and filters as one vocabulary; then the triggers make the table refuse every
UPDATE and DELETE (and TRUNCATE on PostgreSQL) from then on.

Revision ID: 0007_audit_trail
Revises: 0006_call_reports
Create Date: 2026-12-01 12:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_audit_trail'
down_revision = '0006_call_reports'
branch_labels = None
depends_on = None

RENAMED = {
    '2fa_enrol': 'twofactor_enrol',
    '2fa_disable': 'twofactor_disable',
    '2fa_recovery_new': 'twofactor_recovery_codes',
    '2fa_reset': 'twofactor_reset',
}

TRIGGERS = {
    'sqlite': [
        "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
        "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
    ],
    'postgresql': [
        "CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP; END $$",
        "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
        "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()",
        "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()",
    ],
}
DROP = {
    'sqlite': ["DROP TRIGGER IF EXISTS audit_events_no_update", "DROP TRIGGER IF EXISTS audit_events_no_delete"],
    'postgresql': ["DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
                   "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
                   "DROP FUNCTION IF EXISTS audit_events_append_only()"],
}


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('card_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('call_sid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('address', sa.String(length=64), server_default=sa.text("''"),
                                      nullable=False))
        batch_op.create_foreign_key('fk_audit_events_card_id_cards', 'cards', ['card_id'], ['id'])
        batch_op.create_index(batch_op.f('ix_audit_events_holder_id'), ['holder_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_call_sid'), ['call_sid'], unique=False)
        batch_op.create_index('ix_audit_events_agent_at', ['agent', 'at'], unique=False)
        batch_op.create_index('ix_audit_events_action_at', ['action', 'at'], unique=False)
    events = sa.table('audit_events', sa.column('action', sa.String), sa.column('detail', sa.String))
    for old, new in RENAMED.items():
        op.execute(events.update().where(events.c.action == old).values(action=new))
    op.execute(events.update().where(events.c.action == '2fa_recovery_used')
               .values(action='login', detail=sa.func.substr('密码和恢复码，' + events.c.detail, 1, 256)))
    for statement in TRIGGERS.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP.get(op.get_bind().dialect.name, []):
        op.execute(statement)
    events = sa.table('audit_events', sa.column('action', sa.String))
    for old, new in RENAMED.items():
        op.execute(events.update().where(events.c.action == new).values(action=old))
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_action_at')
        batch_op.drop_index('ix_audit_events_agent_at')
        batch_op.drop_index(batch_op.f('ix_audit_events_call_sid'))
        batch_op.drop_index(batch_op.f('ix_audit_events_holder_id'))
        batch_op.drop_constraint('fk_audit_events_card_id_cards', type_='foreignkey')
        batch_op.drop_column('address')
        batch_op.drop_column('call_sid')
        batch_op.drop_column('card_id')
