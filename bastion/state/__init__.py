"""Durable state shared by every worker process: login guards now, the session journal later."""
