"""Certificates: the type registry, issuance, status changes and verification."""
