# A node image. Settings come from CERTEX_* environment variables; mount /srv/certex for
# keys/ and var/ (SQLite) or point CERTEX_DATABASE_URL at PostgreSQL.
FROM python:3.11-slim
WORKDIR /app
# setup.py: the audit's optional C scanner; without a compiler in the image the audit
# runs its Python scanner (same results, slower).
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
