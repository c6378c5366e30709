"""Governance: users, projects, roles, API tokens, sessions and audit queries."""
