"""cfylogs: a durable log relay between Cloudify's Logstash and Alien4Cloud orchestrators."""

__version__ = "0.1.0"
