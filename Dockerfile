# The application image of docker-compose.yml: the pinned environment (requirements.lock) and this
# checkout; every feedstore command runs from it.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DAGSTER_HOME=/var/lib/dagster
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-deps -r requirements.lock
COPY . .
RUN pip install --no-deps -e . && mkdir -p "$DAGSTER_HOME"
ENTRYPOINT ["feedstore"]
