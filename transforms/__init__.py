"""Neurocyte transforms."""
