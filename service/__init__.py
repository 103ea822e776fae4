"""The process around the bot: the command line, signals, start-up and shutdown, `/healthz`, the HTTP port."""
