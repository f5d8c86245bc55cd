# The Runstream image: one image, three roles (api, worker, migrate), chosen by the
# command (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The project itself, with the hosted-model providers (a non-editable install:
# the image does not depend on the source tree at run time).
COPY . .
RUN pip install ".[providers]"

# Never run as root. The data dir is only used by the filesystem broker of dev mode.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin runstream
USER runstream
ENV RUNSTREAM_DATA_DIR=/tmp/runstream

EXPOSE 8000
CMD ["runstream", "api", "--host", "0.0.0.0", "--port", "8000"]
