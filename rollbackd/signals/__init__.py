"""Where signals come from: Prometheus queries and Alertmanager webhooks."""
