from alembic import context

from cloudshop.sql import run_migrations_online

run_migrations_online(context)
