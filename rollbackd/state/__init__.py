"""Incident, cooldown and budget state kept on the Deployment."""
