"""Runs function_app.py on one machine: durable engine, triggers, HTTP server."""
