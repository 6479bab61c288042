# keystile: one process, one SQLite file in /var/lib/keystile (mount a volume there).
FROM python:3.11-slim

RUN useradd --system --home-dir /var/lib/keystile --create-home --shell /usr/sbin/nologin keystile
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /src

ENV KEYSTILE_DB=/var/lib/keystile/keystile.db \
    KEYSTILE_LISTEN=0.0.0.0:8700
USER keystile
WORKDIR /var/lib/keystile
VOLUME /var/lib/keystile
EXPOSE 8700
HEALTHCHECK --interval=10s --timeout=2s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/readyz', timeout=2)"
ENTRYPOINT ["keystile"]
CMD ["serve"]
