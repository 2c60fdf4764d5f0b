"""Typed views: every JSON answer of both web tiers is one of these frozen
dataclasses (base.py has the serializer and the schema annotations; the
OpenAPI documents are generated from their type hints)."""
