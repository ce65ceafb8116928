"""Operator feedback: schema, store, simulated operator, import into partial labels."""
