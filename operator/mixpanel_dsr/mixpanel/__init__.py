"""Everything the operator knows of Mixpanel's GDPR API: shared types and the HTTP client."""
