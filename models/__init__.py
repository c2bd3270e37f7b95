"""The card ledger and the call records: SQLAlchemy 2.0 models with no Flask and no HTTP."""
