"""Storage (SQLAlchemy): the schema, its migrations and every read and write of rows.

``db`` (engines, the session factory, migrations), ``models`` (the tables),
``migrations`` (Alembic), ``closed_periods`` (the guard every session carries),
``ingest`` (events into the log), ``outbox`` (messages waiting for the broker),
``shop_store`` (the shop state the engine loads and the records it writes), ``queries``
(shared reads), ``overrides`` (Admin's changes a shop-file load keeps) and ``db_lock``
(one hub, or one restore, per database).

May import: hub.rules, hub.peerconomy, hub.contract, the base modules.
"""
