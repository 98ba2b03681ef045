# The Neurocyte image: Airflow 3 with the project (transforms + DAGs + plugins)
# installed from the lock file.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
USER airflow
WORKDIR /opt/neurocyte
COPY --chown=airflow:root pyproject.toml uv.lock README.md ./
COPY --chown=airflow:root transforms ./transforms
RUN pip install --no-cache-dir uv \
 && uv export --frozen --no-dev --no-emit-project -o /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps -e .
COPY --chown=airflow:root expectations ./expectations
COPY --chown=airflow:root sql ./sql
COPY --chown=airflow:root dags ./dags
COPY --chown=airflow:root plugins ./plugins
