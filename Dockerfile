# The bot as one container: `python -m bot` (every platform whose credentials are set), /healthz and /metrics on
# PORT. Build: docker build -t replicate-chatbot .   Run: docker run --env-file .env replicate-chatbot
# Several instances on one Redis act as one bot: deploy/compose.yaml (README: Deploying).
FROM python:3.11-slim

# HTTP_HOST: listen beyond the container's loopback, so Prometheus and the platform's checks reach /metrics and
# /healthz (the port is published only where you publish it).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PORT=3000 \
    HTTP_HOST=0.0.0.0

WORKDIR /app

# The locked tree, every file checked against its sha256 (the same install as bin/setup-venv).
COPY requirements.lock ./
RUN python -m pip install --require-hashes -r requirements.lock

# An unprivileged user owns only what it writes: the SQLite state (STATE_URL's default sqlite:///data/bot.db).
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin bot \
    && mkdir -p /app/data \
    && chown bot /app/data
COPY bot ./bot
COPY adapters ./adapters
COPY service ./service
COPY config ./config
VOLUME ["/app/data"]

USER 10001

EXPOSE 3000

# 200 from /healthz while every adapter is connected or inside its reconnect window, 503 after (no curl in a
# slim image: the standard library's urllib, which raises on a 503).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '3000') + '/healthz', timeout=4)"]

# Exec form: the bot is PID 1 and gets SIGTERM itself (it finishes in-flight commands within SHUTDOWN_GRACE).
CMD ["python", "-m", "bot"]
