"""aipersona package."""
