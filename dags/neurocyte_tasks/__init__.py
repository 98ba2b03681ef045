"""Task code shared by the Neurocyte DAGs: plumbing (:mod:`.ops`) and alerts (:mod:`.alerts`).

Airflow puts the DAGs folder on ``sys.path``, so the DAG files import this package
by name; ``dags/.airflowignore`` keeps the DAG processor from parsing it as DAGs.
"""
