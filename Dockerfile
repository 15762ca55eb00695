# A node image. Settings come from CERTEX_* environment variables; mount /srv/certex for
# keys/ and var/ (SQLite) or point CERTEX_DATABASE_URL at PostgreSQL.
FROM python:3.11-slim
WORKDIR /app
# setup.py: the optional C modules (the audit's scanner, the writer's leaf builder); without
# a compiler in the image the Python code they accelerate runs (same results, slower).
COPY pyproject.toml setup.py README.md alembic.ini ./
COPY exchange ./exchange
COPY gateway ./gateway
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --home /srv/certex certex \
    && mkdir -p /srv/certex && chown certex /srv/certex
USER certex
ENV CERTEX_HOME=/srv/certex
EXPOSE 8000
CMD ["sh", "-c", "certex init && certex serve --host 0.0.0.0 --port 8000"]
