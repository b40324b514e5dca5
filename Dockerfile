# syntax=docker/dockerfile:1
# export-processor: the spooler daemon in a container (docker-compose.yml; docs/operations.md).
# ffmpeg comes from the imageio-ffmpeg wheel (a static build with libx264, aac, ...), so the
# image needs no distribution ffmpeg. The user's UID/GID (1001) match the Next.js image's
# `nextjs:nodejs` user, so both containers read and write the shared volume's files.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY spooler ./spooler
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG APP_UID=1001
ARG APP_GID=1001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPOOLER_CONFIG=/etc/spooler/spooler.yaml

# Fonts for text watermarks (ffmpeg drawtext); nothing else from the distribution.
RUN apt-get update \
    && apt-get install -y --no-install-recommends fontconfig fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid "${APP_GID}" spooler \
    && useradd --system --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin spooler

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && spooler --version

COPY config/container.yaml /etc/spooler/spooler.yaml

# The mount point of the `media_data` volume. A new named volume is initialised from the
# image's content at its mount point, so it starts out owned by 1001:1001, group-writable
# and setgid (docker-compose.yml creates this container before the web app's).
RUN mkdir -p /data/spool /data/media \
    && chown -R "${APP_UID}:${APP_GID}" /data \
    && chmod -R 2775 /data

USER ${APP_UID}:${APP_GID}
WORKDIR /data
# Files the daemon creates stay group-writable for the web app (the daemon writes 0664).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 \
    CMD ["spooler", "health"]
ENTRYPOINT ["spooler", "run"]
