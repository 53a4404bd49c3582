"""stage_stats: wall time and peak memory of every improve stage attempt (trainer/stage_stats.py)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06 20:40:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stage_stats',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('iteration', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=50), nullable=False),
    sa.Column('wall_s', sa.Float(), nullable=False),
    sa.Column('peak_gpu_bytes', sa.BigInteger(), nullable=True),
    sa.Column('peak_rss_bytes', sa.BigInteger(), nullable=True),
    sa.Column('device', sa.String(length=200), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stage_stats', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stage_stats_run_id'), ['run_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('stage_stats', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stage_stats_run_id'))
    op.drop_table('stage_stats')
