"""Search spaces of the studies, one YAML per dataset, shipped as package data."""
