"""The bastion's configuration: one YAML file, validated by pydantic models."""

from bastion.config.loader import ConfigIssue, load_config, summary
from bastion.config.models import Config

__all__ = ["Config", "ConfigIssue", "load_config", "summary"]
