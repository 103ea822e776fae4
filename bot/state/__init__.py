"""The state store: counters, rankings and settings that outlast a restart (SQLite or Redis, one interface)."""
