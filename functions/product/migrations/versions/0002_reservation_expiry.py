"""reservations expire unless an order commits them"""

import sqlalchemy as sa
from alembic import op

revision = "product_0002"
down_revision = "product_0001"


def upgrade() -> None:
    op.add_column("reservations", sa.Column("expires_at", sa.DateTime(timezone=True)))
    # Reservations made before expiry existed: due now, so the order sweeper looks at each once and
    # commits it (its order exists) or releases it (it does not).
    op.execute("UPDATE reservations SET expires_at = updated_at WHERE status = 'reserved'")
    op.create_index("reservations_expiry", "reservations", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("reservations_expiry", table_name="reservations")
    op.drop_column("reservations", "expires_at")
