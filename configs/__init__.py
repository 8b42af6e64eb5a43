"""Packaged default configurations, one commented YAML per task."""
