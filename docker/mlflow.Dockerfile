# The MLflow tracking server with the PostgreSQL driver (see docker-compose.yml).
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow>=3" psycopg2-binary
EXPOSE 5000
