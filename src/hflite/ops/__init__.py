"""Operating a runtime: the control API, alerts, the Telegram bot, Prometheus metrics, backups."""
