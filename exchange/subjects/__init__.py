"""Subjects (持证主体): citizens and enterprises, authenticated by trusted identity providers."""
