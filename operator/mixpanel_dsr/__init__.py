"""Kubernetes operator for GDPR/CCPA data subject requests against Mixpanel."""

__version__ = "0.1.0"
