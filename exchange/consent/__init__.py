"""Consent (授权): a subject's grant to one relying party, for one purpose, per claim."""
