# keystile: build a wheel, then install it into a slim runtime image that runs as
# a non-root user. One process on 0.0.0.0:8700 (KEYSTILE_WORKERS=N for more), its
# SQLite store in /var/lib/keystile (mount a volume there), or PostgreSQL through
# KEYSTILE_DB=postgresql://... (see deploy/kubernetes/). Linted by hadolint in
# tests/deploy/test_dockerfile.py.
# keystile is tested on Python 3.11, 3.12 and 3.13 (scripts/test); build with
# --build-arg PYTHON=3.13 for another.
ARG PYTHON=3.11
FROM python:${PYTHON}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON}-slim
# a fixed numeric UID, so Kubernetes' runAsNonRoot can check it without a passwd lookup
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/keystile --create-home \
        --shell /usr/sbin/nologin keystile
COPY --from=build /wheels /wheels
# every wheel keystile needs is in /wheels, built above: no index is asked here
RUN pip install --no-cache-dir --no-index --find-links=/wheels keystile==0.1.0 \
    && rm -rf /wheels

ENV KEYSTILE_DB=/var/lib/keystile/keystile.db \
    KEYSTILE_LISTEN=0.0.0.0:8700 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/keystile
VOLUME /var/lib/keystile
EXPOSE 8700
# /healthz: the process answers (liveness). /readyz also needs the store, so a
# database outage would mark every container unhealthy and get them restarted.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/healthz', timeout=2)"]
ENTRYPOINT ["keystile"]
CMD ["serve"]
