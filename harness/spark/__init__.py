"""The jars of a pyspark session (``pom.xml`` here), fetched by ``harness.engines``.

``python -m harness.spark`` fetches them once and prints their directory, for
``IOTSTREAM_SPARK_JARS``.
"""
