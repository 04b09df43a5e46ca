"""Vendored reference model code; see ../README.md."""
