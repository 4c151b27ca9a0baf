"""Configuration: one declared parameter table, its parsers, the resolved settings."""
