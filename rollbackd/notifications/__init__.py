"""Rendering incident messages and delivering them to DingTalk."""
