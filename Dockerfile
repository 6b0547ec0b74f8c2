# recstream's roles in a container: `docker build -t recstream .`, then one container per role,
# for example `docker run --env-file recstream.env recstream worker --roles interactions`.
# Untested here: the machine this project is built on has no Docker daemon (README).
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# The CPU build of torch: PyPI's default torch wheel carries CUDA (gigabytes a worker never uses).
RUN --mount=from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
        "$(ls /wheels/recstream-*.whl)[server]"
RUN useradd --system --uid 10001 --home-dir /var/lib/recstream --create-home recstream
USER recstream
WORKDIR /var/lib/recstream
# Metrics and health on every interface of the container (RECSTREAM_METRICS_HOST's default).
ENV RECSTREAM_STATE_DIR=/var/lib/recstream
EXPOSE 9464
HEALTHCHECK CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:9464/health/live', timeout=3)"
ENTRYPOINT ["recstream"]
CMD ["worker"]
